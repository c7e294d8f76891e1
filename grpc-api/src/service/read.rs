//! `ListMaps`, `Get` and `List`: reads of one snapshot, at its revision or a
//! past one still covered by the change log, after an optional wait for
//! `min_revision` (read-your-writes).

use std::sync::Arc;
use std::time::Duration;

use mapsync_core::{MapView, Snapshot};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use tracing::Instrument;

use super::{DEFAULT_PAGE_SIZE, LIST_BUFFER, MAX_PAGE_SIZE, MapSyncService, header};
use crate::convert;
use crate::error::RequestError;
use crate::pb;

/// The mirrored maps at the current revision that `auth`'s caller may read.
pub fn list_maps(
    service: &MapSyncService,
    auth: &super::auth::Authed,
) -> Result<pb::ListMapsResponse, RequestError> {
    let snapshot = service.ready_snapshot()?;
    let maps = snapshot
        .maps()
        .filter(|(name, _)| auth.may_read(name))
        .map(|(name, view)| convert::map_description(name, view))
        .collect();
    Ok(pb::ListMapsResponse {
        header: header(&snapshot, snapshot.revision()),
        maps,
    })
}

/// One key's value (see `GetRequest`).
pub async fn get(
    service: &MapSyncService,
    request: Request<pb::GetRequest>,
) -> Result<pb::GetResponse, RequestError> {
    let deadline = client_deadline(request.metadata());
    let request = request.into_inner();
    let snapshot = read_snapshot(service, request.min_revision, request.epoch, deadline).await?;
    let (view, revision) = view_at(&snapshot, &request.map, request.revision)?;
    let expected = view.info().key_size;
    if request.key.len() != expected as usize {
        return Err(RequestError::WrongKeySize {
            map: request.map,
            size: request.key.len(),
            expected,
        });
    }
    let entry = view.entry(&request.key);
    let decoder = convert::Decoder::new(request.decode, &snapshot);
    Ok(pb::GetResponse {
        header: header(&snapshot, revision),
        found: entry.is_some(),
        value: entry.map(|e| e.value_bytes()).unwrap_or_default(),
        mod_revision: entry.map_or(0, |e| e.mod_revision),
        value_json: entry.map_or_else(String::new, |e| decoder.value(&request.map, e.value)),
    })
}

/// Every entry of a map at one revision, in pages (see `ListRequest`).
pub async fn list(
    service: &MapSyncService,
    request: Request<pb::ListRequest>,
) -> Result<ReceiverStream<Result<pb::ListResponse, Status>>, RequestError> {
    let deadline = client_deadline(request.metadata());
    let request = request.into_inner();
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if size > MAX_PAGE_SIZE => {
            return Err(RequestError::PageTooLarge {
                requested: size,
                max: MAX_PAGE_SIZE,
            });
        }
        size => size,
    } as usize;
    let snapshot = read_snapshot(service, request.min_revision, request.epoch, deadline).await?;
    let (view, revision) = view_at(&snapshot, &request.map, request.revision)?;
    let decoder = convert::Decoder::new(request.decode, &snapshot);
    let max_page_bytes = service.limits.max_list_page_bytes;
    let (tx, rx) = mpsc::channel(LIST_BUFFER);
    let span = tracing::debug_span!("list", map = %request.map, revision);
    tokio::spawn(
        async move {
            let mut rest = view.iter_after(None).peekable();
            loop {
                // a page ends at `page_size` entries or `max_page_bytes`,
                // whichever comes first (at least one entry per page)
                let mut entries: Vec<pb::Entry> = Vec::new();
                let mut bytes = 0;
                while entries.len() < page_size {
                    let Some((key, entry)) = rest.peek() else {
                        break;
                    };
                    let entry = decoder.entry(&request.map, key, entry);
                    let size = entry.encoded_len() + 8;
                    if !entries.is_empty() && bytes + size > max_page_bytes {
                        break;
                    }
                    bytes += size;
                    entries.push(entry);
                    rest.next();
                }
                let last = rest.peek().is_none();
                let page = pb::ListResponse {
                    header: header(&snapshot, revision),
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
    Ok(ReceiverStream::new(rx))
}

/// The map as of `revision` (0: the snapshot's), with the revision read.
fn view_at(snapshot: &Snapshot, map: &str, revision: u64) -> Result<(MapView, u64), RequestError> {
    if revision == 0 {
        let view = snapshot.map(map).ok_or_else(|| RequestError::UnknownMap {
            name: map.to_owned(),
        })?;
        return Ok((view.clone(), snapshot.revision()));
    }
    // "oldest" means the same in every status: the oldest revision still in
    // the change log (a read at it and a watch from it both work)
    let oldest = snapshot.log().oldest();
    if snapshot.map(map).is_some() && revision < snapshot.oldest_readable() {
        return Err(RequestError::Compacted {
            requested: revision,
            oldest,
        });
    }
    Ok((snapshot.map_at(map, revision)?, revision))
}

/// A ready snapshot at or after `min_revision`, waiting for it at most until
/// the client's deadline (less a margin, so that the precise status reaches
/// the client before its own timer fires) and the server's maximum wait.
async fn read_snapshot(
    service: &MapSyncService,
    min_revision: u64,
    epoch: u64,
    deadline: Option<Duration>,
) -> Result<Arc<Snapshot>, RequestError> {
    let snapshot = service.ready_snapshot()?;
    RequestError::check_epoch(epoch, snapshot.epoch())?;
    if snapshot.revision() >= min_revision {
        return Ok(snapshot);
    }
    let max_wait = service.limits.max_min_revision_wait;
    let (wait, deadline_first) = match deadline {
        Some(deadline) => {
            let margin = (deadline / 10).min(Duration::from_millis(50));
            let wait = deadline.saturating_sub(margin);
            (wait.min(max_wait), wait < max_wait)
        }
        None => (max_wait, false),
    };
    let reached = tokio::time::timeout(wait, service.store.wait_for_revision(min_revision)).await;
    let current = service.store.revision();
    match reached {
        Ok(()) => Ok(service.store.snapshot()),
        Err(_) if deadline_first => Err(RequestError::MinRevisionDeadline {
            requested: min_revision,
            current,
        }),
        Err(_) => Err(RequestError::MinRevisionMaxWait {
            requested: min_revision,
            current,
            max_wait_ms: u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// The call's deadline from its `grpc-timeout` header (`<digits><unit>`,
/// units H, M, S, m, u, n), if any.
fn client_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_headers_parse() {
        let mut metadata = MetadataMap::new();
        assert_eq!(client_deadline(&metadata), None);
        for (value, expected) in [
            ("250m", Duration::from_millis(250)),
            ("3S", Duration::from_secs(3)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            metadata.insert("grpc-timeout", value.parse().expect("ascii"));
            assert_eq!(client_deadline(&metadata), Some(expected), "{value}");
        }
        metadata.insert("grpc-timeout", "12x".parse().expect("ascii"));
        assert_eq!(client_deadline(&metadata), None);
    }
}
