//! The client: connecting (TCP or Unix socket) and the calls.

use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use mapsync_api as pb;
use mapsync_api::map_sync_client::MapSyncClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::error::ClientError;
use crate::types::{
    GetResult, Listing, Maps, ReadOptions, StartOverReason, WatchItem, WatchOptions,
};
use crate::watch::{self, ITEM_BUFFER, OpenError, Resumer};

/// A connection to one mapsync server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: MapSyncClient<Transport>,
}

/// The channel with the bearer token (if any) added to every call.
pub(crate) type Transport = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer TOKEN` to every request (nothing without a
/// token). Its `Debug` never shows the token.
#[derive(Clone, Default)]
pub(crate) struct BearerToken(Option<AsciiMetadataValue>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(..)"
        } else {
            "BearerToken(None)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl BearerToken {
    /// The metadata value of `token`, which must be visible ASCII without
    /// spaces (what a token file or `$MAPSYNC_TOKEN` holds, trimmed).
    fn new(token: Option<&str>) -> Result<BearerToken, ClientError> {
        let Some(token) = token else {
            return Ok(BearerToken(None));
        };
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidToken);
        }
        let mut value: AsciiMetadataValue = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

/// How [`Client::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Longest wait for the connection (TCP or Unix socket) to be set up;
    /// `None`: the operating system's. Default 10 s.
    pub connect_timeout: Option<Duration>,
    /// The client pings the server after this long without a frame, also
    /// while no call is open, so that a dead or stopped server is noticed
    /// (the connection then fails, and watches reconnect). `None`: no pings.
    /// Default 10 s.
    pub keepalive_interval: Option<Duration>,
    /// A ping not answered within this closes the connection. Default 10 s.
    pub keepalive_timeout: Duration,
    /// TLS for a TCP endpoint (ignored for `unix:`); `None` (the default):
    /// plain HTTP/2.
    pub tls: Option<crate::tls::TlsOptions>,
    /// A bearer token sent with every call (`authorization: Bearer TOKEN`),
    /// for a server with a policy file; `None` (the default): none. Leading
    /// and trailing white space is dropped; anything but visible ASCII is
    /// [`ClientError::InvalidToken`].
    pub token: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(10)),
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(10),
            tls: None,
            token: None,
        }
    }
}

impl Client {
    /// Connects to `HOST:PORT`, `http://HOST:PORT` or `unix:PATH`, with
    /// [`ConnectOptions::default`].
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, &ConnectOptions::default()).await
    }

    /// Connects to `HOST:PORT`, `http://HOST:PORT` or `unix:PATH`. An
    /// endpoint without a port, with another scheme, or a bare path is
    /// [`ClientError::InvalidEndpoint`] saying which.
    pub async fn connect_with(
        endpoint: &str,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let connect_error = |source: tonic::transport::Error| ClientError::Connect {
            endpoint: endpoint.to_owned(),
            reason: innermost(&source),
        };
        let target = parse_endpoint(endpoint)?;
        let token = BearerToken::new(options.token.as_deref())?;
        let configure = |mut settings: Endpoint| {
            if let Some(interval) = options.keepalive_interval {
                settings = settings
                    .http2_keep_alive_interval(interval)
                    .keep_alive_timeout(options.keepalive_timeout)
                    .keep_alive_while_idle(true);
            }
            if let Some(timeout) = options.connect_timeout {
                settings = settings.connect_timeout(timeout);
            }
            settings
        };
        let channel = match target {
            Target::Unix(path) => {
                let timeout = options.connect_timeout;
                // the URI is required by the API and unused by the connector
                configure(Endpoint::from_static("http://localhost"))
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let connect = tokio::net::UnixStream::connect(path);
                            let stream = match timeout {
                                Some(timeout) => tokio::time::timeout(timeout, connect)
                                    .await
                                    .map_err(|_| {
                                        std::io::Error::new(
                                            std::io::ErrorKind::TimedOut,
                                            format!("no connection within {timeout:?}"),
                                        )
                                    })??,
                                None => connect.await?,
                            };
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
                    .map_err(connect_error)?
            }
            Target::Http(uri) => match &options.tls {
                None => configure(Endpoint::from(uri))
                    .connect()
                    .await
                    .map_err(connect_error)?,
                Some(tls) => {
                    let tls = tls.clone();
                    let host = uri.host().unwrap_or_default().to_owned();
                    let port = uri.port_u16().unwrap_or_default();
                    configure(Endpoint::from(uri))
                        .connect_with_connector(tower::service_fn(move |_| {
                            let (tls, host) = (tls.clone(), host.clone());
                            async move {
                                Ok::<_, std::io::Error>(TokioIo::new(
                                    tls.connect(&host, port).await?,
                                ))
                            }
                        }))
                        .await
                        .map_err(connect_error)?
                }
            },
        };
        Ok(Self {
            inner: crate::watch::with_message_limits(MapSyncClient::with_interceptor(
                channel, token,
            )),
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

    /// How the instance is doing (`Status`), as the server sends it.
    pub async fn status(&mut self) -> Result<pb::StatusResponse, ClientError> {
        Ok(self.inner.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// One key's value, now.
    pub async fn get(&mut self, map: &str, key: &[u8]) -> Result<GetResult, ClientError> {
        self.get_with(map, key, &ReadOptions::default()).await
    }

    /// One key's value, now, also decoded with the map's BTF
    /// ([`GetResult::value_json`]).
    pub async fn get_decoded(&mut self, map: &str, key: &[u8]) -> Result<GetResult, ClientError> {
        let options = ReadOptions {
            decode: true,
            ..ReadOptions::default()
        };
        self.get_with(map, key, &options).await
    }

    /// One key's value at a revision, or after the server has reached one.
    pub async fn get_with(
        &mut self,
        map: &str,
        key: &[u8],
        options: &ReadOptions,
    ) -> Result<GetResult, ClientError> {
        let mut request = tonic::Request::new(pb::GetRequest {
            map: map.to_owned(),
            key: key.to_vec().into(),
            revision: options.revision,
            min_revision: options.min_revision,
            epoch: options.epoch,
            decode: options.decode,
        });
        if let Some(timeout) = options.timeout {
            request.set_timeout(timeout);
        }
        let reply = self.inner.get(request).await?.into_inner();
        Ok(GetResult {
            value: reply.found.then_some(reply.value),
            mod_revision: reply.mod_revision,
            revision: reply.header.unwrap_or_default().revision,
            value_json: crate::types::non_empty(reply.value_json),
        })
    }

    /// Every entry of a map, at the current revision (read in pages).
    pub async fn list(&mut self, map: &str) -> Result<Listing, ClientError> {
        self.list_with(map, &ReadOptions::default()).await
    }

    /// Every entry of a map, now, also decoded with the map's BTF
    /// ([`Listing::decoded`]).
    pub async fn list_decoded(&mut self, map: &str) -> Result<Listing, ClientError> {
        let options = ReadOptions {
            decode: true,
            ..ReadOptions::default()
        };
        self.list_with(map, &options).await
    }

    /// Every entry of a map at a revision, or after the server has reached one.
    pub async fn list_with(
        &mut self,
        map: &str,
        options: &ReadOptions,
    ) -> Result<Listing, ClientError> {
        let mut request = tonic::Request::new(pb::ListRequest {
            map: map.to_owned(),
            page_size: 0,
            revision: options.revision,
            min_revision: options.min_revision,
            epoch: options.epoch,
            decode: options.decode,
        });
        if let Some(timeout) = options.timeout {
            request.set_timeout(timeout);
        }
        let mut pages = self.inner.list(request).await?.into_inner();
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
                if options.decode {
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

    /// Changes as they happen; see [`WatchOptions`]. Returns once the server
    /// has accepted the watch (a refused one is an error here). The stream
    /// then survives disconnects and server restarts: it reconnects with
    /// backoff and resumes after the last revision it delivered, and where
    /// that is impossible (history compacted, new epoch) it delivers the
    /// complete current state as one [`WatchItem::StartOver`]. It ends only with
    /// an error no retry can fix, or when dropped.
    ///
    /// A `start_revision` that is already compacted, or of another epoch,
    /// starts with a [`WatchItem::StartOver`].
    pub async fn watch(
        &mut self,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<WatchItem, ClientError>> + use<>, ClientError> {
        let (items, rx) = tokio::sync::mpsc::channel(ITEM_BUFFER);
        let mut resumer = Resumer {
            client: self.inner.clone(),
            next: options.start_revision,
            epoch: options.epoch,
            initial_delivered: false,
            partial: 0,
            options,
            items,
        };
        let mut start_over = None;
        let opened = match watch::open(
            &mut resumer.client,
            &resumer.options,
            resumer.next,
            resumer.epoch,
        )
        .await
        {
            Ok(opened) => Some(opened),
            Err(OpenError::Fatal(error) | OpenError::Retry(error)) => return Err(error),
            Err(OpenError::Canceled(canceled)) => {
                match pb::CancelReason::try_from(canceled.reason) {
                    // resumable: the task starts over
                    Ok(pb::CancelReason::Compacted) => {
                        start_over = Some(StartOverReason::Compacted {
                            oldest: canceled.oldest_revision,
                        });
                        None
                    }
                    Ok(pb::CancelReason::EpochChanged) => {
                        start_over = Some(StartOverReason::EpochChanged);
                        None
                    }
                    _ => {
                        return Err(ClientError::WatchRefused {
                            code: tonic::Code::from_i32(canceled.code),
                            message: canceled.message,
                        });
                    }
                }
            }
        };
        tokio::spawn(resumer.run(opened, start_over).in_current_span());
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Where an endpoint points.
#[derive(Debug, PartialEq)]
enum Target {
    Unix(String),
    Http(tonic::codegen::http::Uri),
}

/// Checks and parses `HOST:PORT`, `http://HOST:PORT` or `unix:PATH`.
fn parse_endpoint(endpoint: &str) -> Result<Target, ClientError> {
    let invalid = |reason: &'static str| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if let Some(path) = endpoint.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(invalid("the socket path after `unix:` is empty"));
        }
        return Ok(Target::Unix(path.to_owned()));
    }
    if endpoint.starts_with('/') || endpoint.starts_with('.') {
        return Err(invalid("a socket path needs the `unix:` prefix"));
    }
    let uri = match endpoint.split_once("://") {
        Some(("http", _)) => endpoint.to_owned(),
        Some(("https", _)) => return Err(invalid("TLS is not supported: use http:// or unix:")),
        Some(_) => {
            return Err(invalid(
                "unsupported scheme: use HOST:PORT, http://HOST:PORT or unix:PATH",
            ));
        }
        None => format!("http://{endpoint}"),
    };
    let uri: tonic::codegen::http::Uri = uri
        .parse()
        .map_err(|_| invalid("expected HOST:PORT, http://HOST:PORT or unix:PATH"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host: expected HOST:PORT"));
    }
    if uri.port().is_none() {
        return Err(invalid(
            "no port: expected HOST:PORT (mapsync has no default port)",
        ));
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(invalid("a path after HOST:PORT is not supported"));
    }
    Ok(Target::Http(uri))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(endpoint: &str) -> String {
        match parse_endpoint(endpoint) {
            Err(error) => error.to_string(),
            Ok(target) => panic!("{endpoint} accepted as {target:?}"),
        }
    }

    #[test]
    fn endpoints_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(
            parse_endpoint("unix:/run/m.sock").expect("valid"),
            Target::Unix("/run/m.sock".into())
        );
        for good in ["127.0.0.1:7000", "http://localhost:7000", "[::1]:7000"] {
            assert!(
                matches!(parse_endpoint(good), Ok(Target::Http(_))),
                "{good}"
            );
        }
        assert!(reason("127.0.0.1").contains("no port"));
        assert!(reason("http://127.0.0.1").contains("no port"));
        assert!(reason("grpc://127.0.0.1:7000").contains("unsupported scheme"));
        assert!(reason("https://127.0.0.1:7000").contains("TLS"));
        assert!(reason("/run/mapsync.sock").contains("unix:"));
        assert!(reason("unix:").contains("empty"));
        assert!(reason("127.0.0.1:7000/x").contains("path"));
        assert!(reason("127.0.0.1").starts_with("invalid endpoint `127.0.0.1`: "));
    }
}
