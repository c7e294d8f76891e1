//! Options and results of the write calls (`put`, `delete`, `txn`, `apply`),
//! builder style.

use std::time::Duration;

use bytes::Bytes;
use mapsync_api as pb;

/// How a put treats an existing key (the kernel's `BPF_ANY`, `BPF_NOEXIST`,
/// `BPF_EXIST`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PutMode {
    /// Create or replace.
    #[default]
    Any,
    /// Only create: [`ClientError::AlreadyExists`](crate::ClientError) if the
    /// key is present (array maps: always).
    NoExist,
    /// Only replace: [`ClientError::NotFound`](crate::ClientError) if the key
    /// is absent.
    Exist,
}

impl PutMode {
    pub(crate) fn to_pb(self) -> pb::PutMode {
        match self {
            PutMode::Any => pb::PutMode::Any,
            PutMode::NoExist => pb::PutMode::NoExist,
            PutMode::Exist => pb::PutMode::Exist,
        }
    }
}

/// Options of [`Client::put_with`](crate::Client::put_with).
///
/// ```
/// use mapsync_client::{PutMode, PutOptions};
/// let options = PutOptions::new().mode(PutMode::NoExist).prev_value(true);
/// assert_eq!(options.mode, PutMode::NoExist);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The kernel flag.
    pub mode: PutMode,
    /// Compare-and-swap: write only if the key's mod revision is this (0:
    /// only if absent); `None`: no check.
    pub expect_mod_revision: Option<u64>,
    /// The epoch `expect_mod_revision` belongs to (0: any).
    pub epoch: u64,
    /// Also return the key's state before the write.
    pub prev_value: bool,
    /// The call's deadline.
    pub timeout: Option<Duration>,
}

impl PutOptions {
    /// Create or replace, no check.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the kernel flag `mode`.
    pub fn mode(mut self, mode: PutMode) -> Self {
        self.mode = mode;
        self
    }

    /// Only if the key's mod revision is `revision` (0: only if absent), of
    /// `epoch` (0: any).
    pub fn expect_mod_revision(mut self, revision: u64, epoch: u64) -> Self {
        self.expect_mod_revision = Some(revision);
        self.epoch = epoch;
        self
    }

    /// Also return the key's state before the write ([`Written::prev`]).
    pub fn prev_value(mut self, prev_value: bool) -> Self {
        self.prev_value = prev_value;
        self
    }

    /// With a deadline for the call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Options of [`Client::delete_with`](crate::Client::delete_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Compare-and-swap, as [`PutOptions::expect_mod_revision`].
    pub expect_mod_revision: Option<u64>,
    /// The epoch `expect_mod_revision` belongs to (0: any).
    pub epoch: u64,
    /// Also return the key's state before the delete.
    pub prev_value: bool,
    /// The call's deadline.
    pub timeout: Option<Duration>,
}

impl DeleteOptions {
    /// No check.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only if the key's mod revision is `revision`, of `epoch` (0: any).
    pub fn expect_mod_revision(mut self, revision: u64, epoch: u64) -> Self {
        self.expect_mod_revision = Some(revision);
        self.epoch = epoch;
        self
    }

    /// Also return the key's state before the delete.
    pub fn prev_value(mut self, prev_value: bool) -> Self {
        self.prev_value = prev_value;
        self
    }

    /// With a deadline for the call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A key's state just before a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// The value, `None` if the key was absent.
    pub value: Option<Bytes>,
    /// The revision that set it (0 when absent).
    pub mod_revision: u64,
}

impl From<pb::PrevValue> for Previous {
    fn from(prev: pb::PrevValue) -> Self {
        Self {
            value: prev.found.then_some(prev.value),
            mod_revision: prev.mod_revision,
        }
    }
}

/// The result of a put or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The server's epoch.
    pub epoch: u64,
    /// The revision at which the write is visible: a read with
    /// [`ReadOptions::min_revision`](crate::ReadOptions) = this reads it.
    pub revision: u64,
    /// With `prev_value`: the key's state before the write.
    pub prev: Option<Previous>,
}

impl Written {
    /// A Put or Delete reply's parts; `prev` only when it was asked for.
    pub(crate) fn from_reply(
        header: Option<pb::ResponseHeader>,
        prev: Option<pb::PrevValue>,
        asked_prev: bool,
    ) -> Self {
        let header = header.unwrap_or_default();
        Self {
            epoch: header.epoch,
            revision: header.revision,
            prev: asked_prev.then(|| prev.unwrap_or_default().into()),
        }
    }
}

/// How a [`Compare`] relates the key's state to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Greater than the target.
    Greater,
    /// Less than the target.
    Less,
}

/// What a [`Compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision (an absent key's is 0).
    ModRevision(u64),
    /// The key's value, bytewise (an absent key never compares true).
    Value(Bytes),
    /// Whether the key is present (`Equal` / `NotEqual` only).
    Exists(bool),
}

/// One condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The map.
    pub map: String,
    /// The key.
    pub key: Bytes,
    /// The relation.
    pub result: CompareResult,
    /// What is compared.
    pub target: CompareTarget,
}

impl Compare {
    /// The key's mod revision relates to `revision` as `result`.
    pub fn mod_revision(
        map: impl Into<String>,
        key: impl Into<Bytes>,
        result: CompareResult,
        revision: u64,
    ) -> Self {
        Self {
            map: map.into(),
            key: key.into(),
            result,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// The key's value relates to `value` (bytewise) as `result`.
    pub fn value(
        map: impl Into<String>,
        key: impl Into<Bytes>,
        result: CompareResult,
        value: impl Into<Bytes>,
    ) -> Self {
        Self {
            map: map.into(),
            key: key.into(),
            result,
            target: CompareTarget::Value(value.into()),
        }
    }

    /// The key is present (`true`) or absent (`false`).
    pub fn exists(map: impl Into<String>, key: impl Into<Bytes>, exists: bool) -> Self {
        Self {
            map: map.into(),
            key: key.into(),
            result: CompareResult::Equal,
            target: CompareTarget::Exists(exists),
        }
    }

    pub(crate) fn into_pb(self) -> pb::Compare {
        use pb::compare::{Result as R, Target};
        let result = match self.result {
            CompareResult::Equal => R::Equal,
            CompareResult::NotEqual => R::NotEqual,
            CompareResult::Greater => R::Greater,
            CompareResult::Less => R::Less,
        };
        let target = match self.target {
            CompareTarget::ModRevision(revision) => Target::ModRevision(revision),
            CompareTarget::Value(value) => Target::Value(value),
            CompareTarget::Exists(exists) => Target::Exists(exists),
        };
        pb::Compare {
            map: self.map,
            key: self.key,
            result: result as i32,
            target: Some(target),
        }
    }
}

/// One write of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Put a value.
    Put {
        /// The map.
        map: String,
        /// The key.
        key: Bytes,
        /// The value (syscall layout).
        value: Bytes,
        /// The kernel flag.
        mode: PutMode,
    },
    /// Remove a key.
    Delete {
        /// The map.
        map: String,
        /// The key.
        key: Bytes,
    },
}

impl TxnOp {
    /// A put with [`PutMode::Any`].
    pub fn put(map: impl Into<String>, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        TxnOp::Put {
            map: map.into(),
            key: key.into(),
            value: value.into(),
            mode: PutMode::Any,
        }
    }

    /// A delete.
    pub fn delete(map: impl Into<String>, key: impl Into<Bytes>) -> Self {
        TxnOp::Delete {
            map: map.into(),
            key: key.into(),
        }
    }

    pub(crate) fn into_pb(self) -> pb::TxnOp {
        use pb::txn_op::Op;
        let op = match self {
            TxnOp::Put {
                map,
                key,
                value,
                mode,
            } => Op::Put(pb::TxnPut {
                map,
                key,
                value,
                mode: mode.to_pb() as i32,
            }),
            TxnOp::Delete { map, key } => Op::Delete(pb::TxnDelete { map, key }),
        };
        pb::TxnOp { op: Some(op) }
    }
}

/// A transaction, like etcd's: if every compare holds, the `success` ops
/// run in order, otherwise the `failure` ops. A failed compare is no error.
///
/// ```
/// use mapsync_client::{Compare, CompareResult, Txn, TxnOp};
/// let txn = Txn::new()
///     .when(Compare::mod_revision("cfg", vec![1, 0, 0, 0], CompareResult::Equal, 41))
///     .then(TxnOp::put("cfg", vec![1, 0, 0, 0], vec![9, 0, 0, 0]))
///     .otherwise(TxnOp::delete("cfg", vec![2, 0, 0, 0]));
/// assert_eq!(txn.success.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Ops run otherwise.
    pub failure: Vec<TxnOp>,
    /// The epoch mod-revision compares belong to (0: any).
    pub epoch: u64,
    /// Also return, per op run, its key's state before it.
    pub prev_value: bool,
    /// The call's deadline.
    pub timeout: Option<Duration>,
}

impl Txn {
    /// No compare, no op.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compare.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an op run when the compares hold.
    pub fn then(mut self, op: TxnOp) -> Self {
        self.success.push(op);
        self
    }

    /// Adds an op run when a compare fails.
    pub fn otherwise(mut self, op: TxnOp) -> Self {
        self.failure.push(op);
        self
    }

    /// The epoch the mod-revision compares belong to.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Also return the previous state of each op's key.
    pub fn prev_value(mut self, prev_value: bool) -> Self {
        self.prev_value = prev_value;
        self
    }

    /// With a deadline for the call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The result of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// The server's epoch.
    pub epoch: u64,
    /// The revision at which the ops are visible (the current one when the
    /// branch that ran wrote nothing).
    pub revision: u64,
    /// Whether the compares held (`success` ran).
    pub succeeded: bool,
    /// With `prev_value`: per op run, in order, its key's state before it.
    pub prev: Vec<Previous>,
}

/// How [`Client::apply`](crate::Client::apply) treats its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApplyMode {
    /// The entries are the whole new set.
    #[default]
    Replace,
    /// The entries are puts and deletes on top of the live set.
    Merge,
}

/// One entry of an Apply: a put, or (merge mode only) a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyEntry {
    /// The key.
    pub key: Bytes,
    /// The value; `None`: delete the key (merge mode).
    pub value: Option<Bytes>,
}

impl ApplyEntry {
    /// The key with this value.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// The key removed (merge mode).
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: None,
        }
    }

    pub(crate) fn into_pb(self) -> pb::ApplyEntry {
        match self.value {
            Some(value) => pb::ApplyEntry {
                key: self.key,
                value,
                delete: false,
            },
            None => pb::ApplyEntry {
                key: self.key,
                value: Bytes::new(),
                delete: true,
            },
        }
    }
}

/// Options of [`Client::apply`](crate::Client::apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Replace or merge.
    pub mode: ApplyMode,
    /// Switch only if the live version is this; `None`: no check.
    pub expect_version: Option<u64>,
    /// The call's deadline (sending every entry included).
    pub timeout: Option<Duration>,
}

impl ApplyOptions {
    /// Replace, no version check.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace or merge.
    pub fn mode(mut self, mode: ApplyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Only if the live version is `version`.
    pub fn expect_version(mut self, version: u64) -> Self {
        self.expect_version = Some(version);
        self
    }

    /// With a deadline for the call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What an Apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The server's epoch.
    pub epoch: u64,
    /// The revision at which the new set is visible (the current one when
    /// the set did not change).
    pub revision: u64,
    /// The version now live.
    pub version: u64,
    /// Entries of the new set.
    pub entries: u64,
    /// Keys the switch changed.
    pub changed: u64,
    /// How long the one outer-slot update took.
    pub switch: Duration,
}
