//! The write RPCs: `Put`, `Delete`, `Txn` and `Apply`, carried out by the
//! kernel task through the write contract (`mapsync_core::control`).
//!
//! Every write goes through the same steps, in this order, and nothing is
//! sent to the kernel task unless all pass:
//! 1. the server accepts writes at all (built [`MapSyncService::with_writes`];
//!    otherwise `UNIMPLEMENTED`, "this server does not accept writes");
//! 2. the caller may write ([`WritePolicy`]; otherwise `PERMISSION_DENIED`,
//!    counted in [`WatchStats::refused_writes`](super::WatchStats::refused_writes)
//!    and logged at most once a second);
//! 3. the mirror is ready (`UNAVAILABLE` before the initial dumps);
//! 4. the request fits the maps of the current snapshot (names, key and
//!    value sizes, enums, the epoch of expected revisions, bounds);
//! 5. the command is sent and its [`Outcome`] or error becomes the reply
//!    ([`write_status`](super::write_status) maps errors).
//!
//! A call whose client goes away after step 5 began is not undone: the
//! kernel task carries out what it received.
//!
//! # Layout
//! - `txn`: converting and checking a `TxnRequest`;
//! - `apply`: collecting an `Apply` stream within its bounds.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mapsync_core::control::{self, CommandHandle, Outcome, PutMode};
use mapsync_core::ratelimit::LogLimiter;
use mapsync_core::{MapView, Snapshot};
use tonic::{Request, Status, Streaming};
use tracing::Instrument;

use super::auth::Authed;
use super::write_status::{WriteError, check_epoch};
use super::{MapSyncService, header};
use crate::authz::{Access, Caller};
use crate::pb;
use crate::peer::{Peer, WritePolicy};

mod apply;
#[cfg(test)]
mod fuzz;
mod txn;

/// The write side of a service: where commands go and who may send them.
#[derive(Debug)]
pub(super) struct Writes {
    commands: CommandHandle,
    policy: WritePolicy,
    denied_log: Mutex<LogLimiter>,
}

impl Writes {
    pub(super) fn new(commands: CommandHandle, policy: WritePolicy) -> Arc<Self> {
        Arc::new(Self {
            commands,
            policy,
            denied_log: Mutex::new(LogLimiter::default()),
        })
    }
}

/// Steps 1 to 3: the command handle and the snapshot to check against.
/// Without a policy file the write policy decides; with one, the caller's
/// roles must allow writing every map of `maps` (an Apply's map is checked
/// once its first message names it).
fn admit<'a>(
    service: &MapSyncService,
    auth: &Authed,
    kind: &'static str,
    maps: impl IntoIterator<Item = &'a str>,
) -> Result<(CommandHandle, Arc<Snapshot>), WriteError> {
    let writes = service.writes.as_ref().ok_or(WriteError::NotAccepted)?;
    let peer = auth.credentials.peer.as_ref();
    if !matches!(auth.caller, Caller::Open) {
        if let Err(denied) = auth.check(Access::Write, maps) {
            service.stats.count_refused_write();
            return Err(denied.into());
        }
    } else if let Err(denied) = writes.policy.check(peer) {
        auth.authorizer().count_denied();
        service.stats.count_refused_write();
        let suppressed = writes.denied_log.lock().expect("not poisoned").check();
        if let Some(suppressed) = suppressed {
            let peer = peer.map_or_else(|| "unknown".to_owned(), Peer::to_string);
            tracing::warn!(%peer, kind, suppressed, "refused a write: {denied}");
        }
        return Err(denied.into());
    }
    if !service.store.is_ready() {
        return Err(WriteError::NotReady);
    }
    Ok((writes.commands.clone(), service.store.snapshot()))
}

/// Runs one write RPC in its span (`kind`, `map`, `outcome`), turning its
/// error into a status.
async fn traced<T>(
    kind: &'static str,
    map: &str,
    body: impl Future<Output = Result<T, WriteError>>,
) -> Result<T, Status> {
    let span = tracing::info_span!("write", kind, map, outcome = tracing::field::Empty);
    async {
        let result = body.await;
        let outcome = result.as_ref().map_or_else(WriteError::outcome, |_| "ok");
        tracing::Span::current().record("outcome", outcome);
        match &result {
            Ok(_) => tracing::debug!("write done"),
            Err(error) => tracing::debug!(%error, "write not done"),
        }
        result.map_err(Status::from)
    }
    .instrument(span)
    .await
}

/// The view of `map`, or `NOT_FOUND`.
pub(super) fn view<'a>(snapshot: &'a Snapshot, map: &str) -> Result<&'a MapView, WriteError> {
    snapshot.map(map).ok_or_else(|| WriteError::UnknownMap {
        name: map.to_owned(),
    })
}

/// Checks that `bytes` are `expected` long.
pub(super) fn check_size(
    map: &str,
    field: impl FnOnce() -> String,
    bytes: &[u8],
    expected: u32,
) -> Result<(), WriteError> {
    if bytes.len() != expected as usize {
        return Err(WriteError::WrongSize {
            map: map.to_owned(),
            field: field(),
            size: bytes.len(),
            expected,
        });
    }
    Ok(())
}

/// Checks `key` (and `value`, for a put) against `map`'s sizes; `field` is
/// the request path of the op (`""` for a top-level Put).
pub(super) fn check_entry(
    snapshot: &Snapshot,
    map: &str,
    field: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), WriteError> {
    let info = view(snapshot, map)?.info();
    check_size(map, || format!("{field}key"), key, info.key_size)?;
    if let Some(value) = value {
        check_size(map, || format!("{field}value"), value, info.value_bytes)?;
    }
    Ok(())
}

/// The kernel flag of a wire `PutMode`.
pub(super) fn put_mode(mode: i32, field: impl FnOnce() -> String) -> Result<PutMode, WriteError> {
    match pb::PutMode::try_from(mode) {
        Ok(pb::PutMode::Any) => Ok(PutMode::Any),
        Ok(pb::PutMode::NoExist) => Ok(PutMode::NoExist),
        Ok(pb::PutMode::Exist) => Ok(PutMode::Exist),
        Err(_) => Err(WriteError::UnknownEnum {
            field: field(),
            value: mode,
        }),
    }
}

/// The wire form of a key's previous state.
pub(super) fn prev_value(previous: &control::Previous) -> pb::PrevValue {
    pb::PrevValue {
        found: previous.value.is_some(),
        value: previous.value.clone().unwrap_or_default(),
        mod_revision: previous.mod_revision,
    }
}

/// `Put`.
pub async fn put(
    service: &MapSyncService,
    request: Request<pb::PutRequest>,
    auth: Authed,
) -> Result<pb::PutResponse, Status> {
    let request = request.into_inner();
    let map = request.map.clone();
    traced("put", &map, async {
        let (commands, snapshot) = admit(service, &auth, "put", [request.map.as_str()])?;
        check_entry(
            &snapshot,
            &request.map,
            "",
            &request.key,
            Some(&request.value),
        )?;
        let mode = put_mode(request.mode, || "mode".to_owned())?;
        if request.expect_mod_revision.is_some() {
            check_epoch(request.epoch, snapshot.epoch())?;
        }
        let put = control::Put {
            map: request.map,
            key: request.key,
            value: request.value,
            mode,
            expect_mod_revision: request.expect_mod_revision,
        };
        let outcome = commands.put(put).await?;
        Ok(pb::PutResponse {
            header: header(&snapshot, outcome.revision),
            prev: request
                .prev_value
                .then(|| outcome.previous.first().map(prev_value))
                .flatten(),
        })
    })
    .await
}

/// `Delete`.
pub async fn delete(
    service: &MapSyncService,
    request: Request<pb::DeleteRequest>,
    auth: Authed,
) -> Result<pb::DeleteResponse, Status> {
    let request = request.into_inner();
    let map = request.map.clone();
    traced("delete", &map, async {
        let (commands, snapshot) = admit(service, &auth, "delete", [request.map.as_str()])?;
        check_entry(&snapshot, &request.map, "", &request.key, None)?;
        if request.expect_mod_revision.is_some() {
            check_epoch(request.epoch, snapshot.epoch())?;
        }
        let delete = control::Delete {
            map: request.map,
            key: request.key,
            expect_mod_revision: request.expect_mod_revision,
        };
        let outcome = commands.delete(delete).await?;
        Ok(pb::DeleteResponse {
            header: header(&snapshot, outcome.revision),
            prev: request
                .prev_value
                .then(|| outcome.previous.first().map(prev_value))
                .flatten(),
        })
    })
    .await
}

/// `Txn`.
pub async fn txn(
    service: &MapSyncService,
    request: Request<pb::TxnRequest>,
    auth: Authed,
) -> Result<pb::TxnResponse, Status> {
    let request = request.into_inner();
    let map = txn::maps_of(&request);
    traced("txn", &map, async {
        let (commands, snapshot) = admit(service, &auth, "txn", txn::all_maps(&request))?;
        let prev = request.prev_value;
        let txn = txn::convert(&snapshot, request)?;
        let outcome: Outcome = commands.txn(txn).await?;
        Ok(pb::TxnResponse {
            header: header(&snapshot, outcome.revision),
            succeeded: outcome.succeeded,
            prev: if prev {
                outcome.previous.iter().map(prev_value).collect()
            } else {
                Vec::new()
            },
        })
    })
    .await
}

/// `Apply`.
pub async fn apply(
    service: &MapSyncService,
    request: Request<Streaming<pb::ApplyRequest>>,
    auth: Authed,
) -> Result<pb::ApplyResponse, Status> {
    let mut stream = request.into_inner();
    let span = tracing::info_span!(
        "write",
        kind = "apply",
        map = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    async {
        let result = async {
            let (commands, snapshot) = admit(service, &auth, "apply", [])?;
            let authorize = |map: &str| {
                auth.check(Access::Write, [map]).map_err(|denied| {
                    service.stats.count_refused_write();
                    WriteError::from(denied)
                })
            };
            let apply = apply::collect(&snapshot, &mut stream, authorize).await?;
            let outcome = commands.apply(apply).await?;
            let applied = outcome.applied.unwrap_or_default();
            Ok(pb::ApplyResponse {
                header: header(&snapshot, outcome.revision),
                version: applied.version,
                entries: applied.entries,
                changed: applied.changed,
                switch_ns: applied.switch_ns,
            })
        }
        .await;
        let outcome = result.as_ref().map_or_else(WriteError::outcome, |_| "ok");
        tracing::Span::current().record("outcome", outcome);
        if let Err(error) = &result {
            tracing::debug!(%error, "write not done");
        }
        result.map_err(Status::from)
    }
    .instrument(span)
    .await
}

/// A key as hex, for messages.
pub(super) fn hex(key: &Bytes) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
