//! The client: connecting (TCP or Unix socket) and the calls.

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use mapsync_grpc::pb;
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::types::{GetResult, Listing, Maps, WatchItem, WatchOptions};

/// A connection to one mapsync server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: MapSyncClient<Channel>,
}

impl Client {
    /// Connects to `HOST:PORT`, `http://HOST:PORT` or `unix:PATH`.
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
        };
        let connect_error = |source: tonic::transport::Error| ClientError::Connect {
            endpoint: endpoint.to_owned(),
            reason: innermost(&source),
            source,
        };
        let channel = if let Some(path) = endpoint.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid());
            }
            let path = path.to_owned();
            // the URI is required by the API and unused by the connector
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(connect_error)?
        } else {
            let uri = if endpoint.contains("://") {
                endpoint.to_owned()
            } else {
                format!("http://{endpoint}")
            };
            Endpoint::from_shared(uri)
                .map_err(|_| invalid())?
                .connect()
                .await
                .map_err(connect_error)?
        };
        Ok(Self {
            inner: MapSyncClient::new(channel),
        })
    }

    /// The mirrored maps.
    pub async fn list_maps(&mut self) -> Result<Maps, ClientError> {
        let reply = self
            .inner
            .list_maps(pb::ListMapsRequest {})
            .await?
            .into_inner();
        let header = reply.header.unwrap_or_default();
        Ok(Maps {
            epoch: header.epoch,
            revision: header.revision,
            maps: reply.maps.into_iter().map(Into::into).collect(),
        })
    }

    /// One key's value.
    pub async fn get(&mut self, map: &str, key: &[u8]) -> Result<GetResult, ClientError> {
        self.get_with(map, key, false).await
    }

    /// One key's value, also decoded with the map's BTF
    /// ([`GetResult::value_json`]).
    pub async fn get_decoded(&mut self, map: &str, key: &[u8]) -> Result<GetResult, ClientError> {
        self.get_with(map, key, true).await
    }

    async fn get_with(
        &mut self,
        map: &str,
        key: &[u8],
        decode: bool,
    ) -> Result<GetResult, ClientError> {
        let reply = self
            .inner
            .get(pb::GetRequest {
                map: map.to_owned(),
                key: key.to_vec().into(),
                decode,
            })
            .await?
            .into_inner();
        Ok(GetResult {
            value: reply.found.then_some(reply.value),
            mod_revision: reply.mod_revision,
            revision: reply.header.unwrap_or_default().revision,
            value_json: crate::types::non_empty(reply.value_json),
        })
    }

    /// Every entry of a map, at one revision (read in pages).
    pub async fn list(&mut self, map: &str) -> Result<Listing, ClientError> {
        self.list_with(map, false).await
    }

    /// Every entry of a map, also decoded with the map's BTF
    /// ([`Listing::decoded`]).
    pub async fn list_decoded(&mut self, map: &str) -> Result<Listing, ClientError> {
        self.list_with(map, true).await
    }

    async fn list_with(&mut self, map: &str, decode: bool) -> Result<Listing, ClientError> {
        let mut pages = self
            .inner
            .list(pb::ListRequest {
                map: map.to_owned(),
                page_size: 0,
                decode,
            })
            .await?
            .into_inner();
        let mut listing = Listing {
            epoch: 0,
            revision: 0,
            entries: Vec::new(),
            decoded: Vec::new(),
        };
        while let Some(page) = pages.message().await? {
            let header = page.header.unwrap_or_default();
            listing.epoch = header.epoch;
            listing.revision = header.revision;
            for entry in page.entries {
                if decode {
                    listing.decoded.push((entry.key_json, entry.value_json));
                }
                listing.entries.push((entry.key, entry.value));
            }
            if page.last {
                break;
            }
        }
        Ok(listing)
    }

    /// Changes as they happen; see [`WatchOptions`].
    pub async fn watch(
        &mut self,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<WatchItem, ClientError>> + use<>, ClientError> {
        let stream = self
            .inner
            .watch(pb::WatchRequest {
                maps: options.maps,
                start_revision: options.start_revision,
                epoch: options.epoch,
                key_prefix: options.key_prefix,
                decode: options.decode,
            })
            .await?
            .into_inner();
        Ok(stream.map(|item| WatchItem::try_from(item?)))
    }
}

/// The innermost cause of a transport error: the part a person can act on
/// ("No such file or directory", "Connection refused").
fn innermost(error: &tonic::transport::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
