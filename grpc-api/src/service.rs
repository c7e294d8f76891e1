//! The `mapsync.v1.MapSync` service over a [`Store`].

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use mapsync_core::{Snapshot, Store, SubscribeFilter, SyncError, WatchBatch};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::convert;
use crate::error::RequestError;
use crate::pb;

/// Messages buffered per `Watch` stream (each holds up to 512 events): a
/// slow client holds at most this many; the subscription behind it is a
/// cursor into the shared change log and costs nothing more.
pub const WATCH_BUFFER: usize = 16;
/// Pages buffered per `List` stream.
pub const LIST_BUFFER: usize = 4;
/// Entries per `List` page when the request does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Most entries per `List` page.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// The service: stateless apart from the store it reads.
#[derive(Debug, Clone)]
pub struct MapSyncService {
    store: Store,
    stopping: watch::Receiver<bool>,
}

impl MapSyncService {
    /// A service over `store` whose streams end when `stopping` turns true
    /// (graceful shutdown: open watches are told `UNAVAILABLE` and closed, so
    /// the server's drain does not wait on them forever).
    pub fn new(store: Store, stopping: watch::Receiver<bool>) -> Self {
        Self { store, stopping }
    }

    /// The tonic server wrapper of this service.
    pub fn into_server(self) -> pb::map_sync_server::MapSyncServer<Self> {
        pb::map_sync_server::MapSyncServer::new(self)
    }

    fn ready_snapshot(&self) -> Result<Arc<Snapshot>, RequestError> {
        if !self.store.is_ready() {
            return Err(RequestError::NotReady);
        }
        Ok(self.store.snapshot())
    }
}

fn header(snapshot: &Snapshot) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        epoch: snapshot.epoch().0,
        revision: snapshot.revision(),
    })
}

fn unknown_map(name: &str) -> RequestError {
    SyncError::UnknownMap {
        name: name.to_owned(),
    }
    .into()
}

#[tonic::async_trait]
impl pb::map_sync_server::MapSync for MapSyncService {
    async fn list_maps(
        &self,
        _request: Request<pb::ListMapsRequest>,
    ) -> Result<Response<pb::ListMapsResponse>, Status> {
        let snapshot = self.ready_snapshot()?;
        let maps = snapshot
            .maps()
            .map(|(name, view)| convert::map_description(name, view))
            .collect();
        Ok(Response::new(pb::ListMapsResponse {
            header: header(&snapshot),
            maps,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let snapshot = self.ready_snapshot()?;
        let view = snapshot
            .map(&request.map)
            .ok_or_else(|| unknown_map(&request.map))?;
        let expected = view.info().key_size;
        if request.key.len() != expected as usize {
            return Err(RequestError::from(SyncError::WrongKeySize {
                map: request.map,
                size: request.key.len(),
                expected,
            })
            .into());
        }
        let entry = view.entry(&request.key);
        let decoder = convert::Decoder::new(request.decode, &snapshot);
        Ok(Response::new(pb::GetResponse {
            header: header(&snapshot),
            found: entry.is_some(),
            value: entry.map(|e| e.value.clone()).unwrap_or_default(),
            mod_revision: entry.map_or(0, |e| e.mod_revision),
            value_json: entry.map_or_else(String::new, |e| decoder.value(&request.map, &e.value)),
        }))
    }

    type ListStream = ReceiverStream<Result<pb::ListResponse, Status>>;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(RequestError::PageTooLarge {
                    requested: size,
                    max: MAX_PAGE_SIZE,
                }
                .into());
            }
            size => size,
        } as usize;
        let snapshot = self.ready_snapshot()?;
        if snapshot.map(&request.map).is_none() {
            return Err(unknown_map(&request.map).into());
        }
        let decoder = convert::Decoder::new(request.decode, &snapshot);
        let (tx, rx) = mpsc::channel(LIST_BUFFER);
        let span = tracing::debug_span!("list", map = %request.map, revision = snapshot.revision());
        tokio::spawn(
            async move {
                let view = snapshot.map(&request.map).expect("checked above");
                let mut after: Option<Bytes> = None;
                loop {
                    let entries: Vec<pb::Entry> = view
                        .iter_after(after.as_ref())
                        .take(page_size)
                        .map(|(key, entry)| pb::Entry {
                            key: key.clone(),
                            value: entry.value.clone(),
                            mod_revision: entry.mod_revision,
                            key_json: decoder.key(&request.map, key),
                            value_json: decoder.value(&request.map, &entry.value),
                        })
                        .collect();
                    after = entries.last().map(|e| e.key.clone());
                    let last = entries.len() < page_size;
                    let page = pb::ListResponse {
                        header: header(&snapshot),
                        entries,
                        last,
                    };
                    if tx.send(Ok(page)).await.is_err() || last {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let decoder = convert::Decoder::new(request.decode, &*self.ready_snapshot()?);
        let epoch = self.store.epoch();
        RequestError::check_epoch(request.epoch, epoch)?;
        let filter = SubscribeFilter {
            maps: request.maps.clone(),
            key_prefix: (!request.key_prefix.is_empty()).then_some(request.key_prefix),
        };
        let mut subscription = self
            .store
            .subscribe(request.start_revision, filter)
            .map_err(RequestError::from)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let span = tracing::info_span!("watch", maps = ?request.maps, start_revision = request.start_revision);
        let mut stopping = self.stopping.clone();
        tokio::spawn(
            async move {
                tracing::debug!("watch started");
                loop {
                    let item = tokio::select! {
                        item = subscription.next() => item,
                        _ = stopping.wait_for(|stop| *stop) => {
                            let _ = tx.try_send(Err(Status::unavailable(
                                "mapsync is shutting down: reconnect and resume from the last revision you saw",
                            )));
                            break;
                        }
                    };
                    let Some(item) = item else { break };
                    let message = match item {
                        Ok(WatchBatch::Events(events)) => Ok(pb::WatchResponse {
                            epoch: epoch.0,
                            kind: Some(pb::watch_response::Kind::Events(pb::EventBatch {
                                events: events.iter().map(|e| decoder.event(e)).collect(),
                            })),
                        }),
                        Ok(WatchBatch::InitialStateDone { revision }) => Ok(pb::WatchResponse {
                            epoch: epoch.0,
                            kind: Some(pb::watch_response::Kind::InitialStateDone(
                                pb::InitialStateDone { revision },
                            )),
                        }),
                        Err(error) => Err(Status::from(RequestError::from(error))),
                    };
                    let failed = message.is_err();
                    if tx.send(message).await.is_err() || failed {
                        break;
                    }
                }
                tracing::debug!("watch ended");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
