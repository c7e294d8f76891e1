//! The write RPCs: `Put`, `Delete`, `Txn` and `Apply`, carried out by the
//! kernel task through the write contract (`mapsync_core::control`).
//!
//! Not served yet: every write is `UNIMPLEMENTED`.

use tonic::{Request, Status, Streaming};

use super::MapSyncService;
use crate::pb;

/// `Put`.
pub async fn put(
    _service: &MapSyncService,
    _request: Request<pb::PutRequest>,
) -> Result<pb::PutResponse, Status> {
    Err(Status::unimplemented("writes are not served yet"))
}

/// `Delete`.
pub async fn delete(
    _service: &MapSyncService,
    _request: Request<pb::DeleteRequest>,
) -> Result<pb::DeleteResponse, Status> {
    Err(Status::unimplemented("writes are not served yet"))
}

/// `Txn`.
pub async fn txn(
    _service: &MapSyncService,
    _request: Request<pb::TxnRequest>,
) -> Result<pb::TxnResponse, Status> {
    Err(Status::unimplemented("writes are not served yet"))
}

/// `Apply`.
pub async fn apply(
    _service: &MapSyncService,
    _request: Request<Streaming<pb::ApplyRequest>>,
) -> Result<pb::ApplyResponse, Status> {
    Err(Status::unimplemented("writes are not served yet"))
}
