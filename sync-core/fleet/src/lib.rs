//! mapsync's fleet side: the etcd key layout a fleet writes its maps in, and
//! the difference between etcd's state of a map and the mirror's, as write
//! requests of the write contract ([`mapsync_core::control`]).
//!
//! Layout: under a prefix `P`, the map's entry with key bytes `K` is the etcd
//! key `P/HEX(K)` (lowercase hex, exactly the map's key size) whose value is
//! the raw value bytes (exactly the map's value bytes), or with the JSON value
//! format ([`ValueFormat::Json`], maps with BTF) the value as typed JSON. An
//! etcd key under the prefix that does not decode is treated as absent and
//! reported.
//!
//! This crate depends on the mirror's write contract only: never on the
//! kernel crate or aya (`scripts/check-deps.sh`).

pub mod apply;
pub mod connect;
pub mod diff;
pub mod follower;
pub mod layout;
pub mod reporter;
pub mod spec;
pub mod status;
pub mod typed_json;

pub use apply::{
    ETCD_DEFAULT_MAX_TXN_OPS, SetFileError, SetMode, parse_hex_set, parse_json_set, plan_set,
};
pub use connect::{EtcdTls, TlsFileError, connect};
pub use diff::{Desired, difference, into_apply, into_batches};
pub use follower::{FollowConfig, FollowError, FollowStats, Follower};
pub use layout::{Layout, Undecodable, ValueFormat};
pub use reporter::{REVOKE_TIMEOUT, ReportConfig, ReportError, Reporter};
pub use spec::{SpecError, parse_follow};
pub use status::{
    DEFAULT_STATUS_PREFIX, FleetStatus, MapStatus, NodeRow, NodeStatus, StatusError, StatusLayout,
    fleet_status,
};
