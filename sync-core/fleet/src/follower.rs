//! The follower: one etcd prefix into one mirrored map, through the write
//! contract.
//!
//! It lists the prefix at a revision and applies the difference against the
//! mirror, then watches from that revision + 1 and applies the changes of
//! each etcd revision (one etcd txn) as one write request. On a lost
//! connection it resumes from the last applied etcd revision; when etcd has
//! compacted that history (or anything is in doubt) it lists again and
//! applies the difference, deletions included. Every `reconcile_every` it
//! lists the prefix *at the applied revision* and writes back whatever the
//! map holds that etcd does not say: local writes by others are reverted
//! and counted (unless the map is local-wins: [`FollowConfig::local_wins`]).
//!
//! Atomicity: the changes of one etcd revision are never split: a watch
//! response (whole revisions; several when the follower lags) is one
//! request (up to [`MAX_BATCH_OPS`] keys), so readers never see part of an
//! etcd txn (of up to `MAX_BATCH_OPS` ops). On a plain
//! map that is one [`Command::Batch`] (one mapsync revision, up to
//! [`MAX_BATCH_OPS`] ops, far above etcd's `--max-txn-ops`); on a
//! switchable map (`--switch`) one merge [`Command::Apply`] of the changed
//! keys (one atomic switch, any size). A relist's difference is one Apply
//! too; on a plain map it is several revisions only past `MAX_BATCH_OPS`.
//!
//! [`Command::Batch`]: mapsync_core::control::Command::Batch
//! [`Command::Apply`]: mapsync_core::control::Command::Apply
//! [`MAX_BATCH_OPS`]: mapsync_core::control::MAX_BATCH_OPS

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use mapsync_core::control::{CommandHandle, MAX_BATCH_OPS};
use mapsync_core::ratelimit::LogLimiter;
use mapsync_core::{CommandError, Store};
use rand::Rng;
use tracing::{info, warn};

use crate::connect::{EtcdTls, connect};
use crate::diff::{Desired, difference, into_apply, into_batches};
use crate::layout::{Layout, ValueFormat};

/// Most undecodable etcd keys remembered (each is logged once).
pub const MAX_REPORTED_KEYS: usize = 4096;

/// What to follow, and how.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The mirrored map written.
    pub map: String,
    /// etcd endpoints, `HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The etcd prefix (see [`Layout`]).
    pub prefix: String,
    /// How often the map is checked against etcd at the applied revision.
    pub reconcile_every: Duration,
    /// First wait after an error; doubled up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    /// Longest wait after errors.
    pub backoff_max: Duration,
    /// TLS to etcd (`etcds://`); `None`: plain text.
    pub tls: Option<EtcdTls>,
    /// Local writes win: no periodic reconcile reverts them (etcd's
    /// changes are still applied as they come, and a relist, at start or
    /// after a compaction, still makes the map etcd's state).
    pub local_wins: bool,
    /// How the etcd values are written (raw bytes, or typed JSON for a map
    /// with BTF).
    pub format: ValueFormat,
}

impl FollowConfig {
    /// A config with a 30 s reconcile and a 100 ms .. 10 s backoff.
    pub fn new(map: &str, endpoints: Vec<String>, prefix: &str) -> Self {
        Self {
            map: map.to_owned(),
            endpoints,
            prefix: prefix.to_owned(),
            reconcile_every: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            tls: None,
            local_wins: false,
            format: ValueFormat::Raw,
        }
    }
}

/// Counters of one follower (read them any time).
#[derive(Debug, Default)]
pub struct FollowStats {
    applied: AtomicI64,
    relists: AtomicU64,
    reverted: AtomicU64,
    undecodable: AtomicU64,
    errors: AtomicU64,
}

impl FollowStats {
    /// The etcd revision the map reflects (0 before the first list).
    pub fn applied_revision(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }
    /// Full lists of the prefix (the first one included).
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }
    /// Keys written back because the map differed from etcd at the applied
    /// revision (local writes by others).
    pub fn reverted(&self) -> u64 {
        self.reverted.load(Ordering::Relaxed)
    }
    /// Distinct etcd keys seen that do not decode for the map (skipped).
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }
    /// Sessions ended by an error (each followed by a backoff).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Why a follower session ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The write into the map failed (nothing of that request was written).
    #[error("write into the map: {0}")]
    Write(#[from] CommandError),
    /// The map is not (yet) mirrored.
    #[error("map `{0}` is not mirrored")]
    UnknownMap(String),
    /// JSON values need the map's BTF types (and one value per key: not
    /// per-CPU).
    #[error("map `{0}` has no BTF key and value types (or is per-CPU): its values cannot be JSON")]
    NoTypes(String),
    /// etcd compacted the history past the applied revision.
    #[error("etcd compacted its history to revision {0}")]
    Compacted(i64),
    /// etcd canceled the watch.
    #[error("etcd canceled the watch: {0}")]
    Canceled(String),
    /// The watch stream ended.
    #[error("the etcd watch stream ended")]
    StreamEnded,
}

/// Follows one prefix into one map; [`Follower::run`] never returns.
#[derive(Debug)]
pub struct Follower {
    config: FollowConfig,
    store: Store,
    commands: CommandHandle,
    stats: Arc<FollowStats>,
    reported: HashSet<Vec<u8>>,
    relist_needed: bool,
    warn_limit: LogLimiter,
}

impl Follower {
    /// A follower writing through `commands` into the map `store` mirrors.
    pub fn new(config: FollowConfig, store: Store, commands: CommandHandle) -> Self {
        Self {
            config,
            store,
            commands,
            stats: Arc::default(),
            reported: HashSet::new(),
            relist_needed: true,
            warn_limit: LogLimiter::default(),
        }
    }

    /// The follower's counters.
    pub fn stats(&self) -> Arc<FollowStats> {
        self.stats.clone()
    }

    /// Follows until dropped (abort its task to stop it): sessions ended by
    /// errors are retried after a bounded, jittered, doubling backoff.
    pub async fn run(mut self) {
        let mut backoff = self.config.backoff_min;
        loop {
            let before = self.stats.applied_revision();
            let err = self.session().await;
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.warn_limit.check() {
                warn!(map = %self.config.map, error = %err, suppressed, "fleet follower: retrying");
            }
            if self.stats.applied_revision() > before {
                backoff = self.config.backoff_min;
            }
            let jitter = rand::rng().random_range(0.5..1.0);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    fn layout(&self) -> Result<Layout, FollowError> {
        let snapshot = self.store.snapshot();
        let view = snapshot
            .map(&self.config.map)
            .ok_or_else(|| FollowError::UnknownMap(self.config.map.clone()))?;
        let info = view.info();
        let layout = Layout::new(
            &self.config.prefix,
            info.key_size as usize,
            info.value_bytes as usize,
        );
        match self.config.format {
            ValueFormat::Raw => Ok(layout),
            ValueFormat::Json => match &info.types {
                Some(types) if info.value_bytes == info.value_size => {
                    Ok(layout.with_json(types.clone()))
                }
                _ => Err(FollowError::NoTypes(self.config.map.clone())),
            },
        }
    }

    async fn session(&mut self) -> FollowError {
        match self.follow().await {
            Ok(never) => match never {},
            Err(err) => err,
        }
    }

    async fn follow(&mut self) -> Result<std::convert::Infallible, FollowError> {
        let layout = self.layout()?;
        let mut client = connect(&self.config.endpoints, self.config.tls.as_ref()).await?;
        if self.relist_needed {
            let (revision, _) = self.relist(&mut client, &layout, None).await?;
            self.stats.relists.fetch_add(1, Ordering::Relaxed);
            self.stats.applied.store(revision, Ordering::Release);
            self.relist_needed = false;
        }
        let from = self.stats.applied_revision() + 1;
        let mut stream = client
            .watch(
                layout.dir(),
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await?;
        let mut reconcile = tokio::time::interval(self.config.reconcile_every);
        reconcile.tick().await;
        let reconciles = !self.config.local_wins;
        loop {
            tokio::select! {
                _ = reconcile.tick(), if reconciles => {
                    let at = self.stats.applied_revision();
                    match self.relist(&mut client, &layout, Some(at)).await {
                        Ok((_, reverted)) => {
                            if reverted > 0 {
                                info!(map = %self.config.map, reverted, "fleet: local writes reverted to etcd's state");
                            }
                            self.stats.reverted.fetch_add(reverted as u64, Ordering::Relaxed);
                        }
                        Err(err) => {
                            self.relist_needed = true;
                            return Err(err);
                        }
                    }
                }
                message = stream.message() => {
                    let Some(response) = message? else {
                        return Err(FollowError::StreamEnded);
                    };
                    if response.compact_revision() > 0 {
                        self.relist_needed = true;
                        return Err(FollowError::Compacted(response.compact_revision()));
                    }
                    if response.canceled() {
                        self.relist_needed = true;
                        return Err(FollowError::Canceled(response.cancel_reason().to_owned()));
                    }
                    self.apply_events(&layout, response.events()).await?;
                }
            }
        }
    }

    /// Lists the prefix (at `at`, or the latest revision) and writes the
    /// difference; returns the revision listed and the ops written.
    async fn relist(
        &mut self,
        client: &mut Client,
        layout: &Layout,
        at: Option<i64>,
    ) -> Result<(i64, usize), FollowError> {
        let mut options = GetOptions::new().with_prefix();
        if let Some(at) = at {
            options = options.with_revision(at);
        }
        let listed = client.get(layout.dir(), Some(options)).await?;
        let revision = listed.header().map_or(0, |h| h.revision());
        let revision = at.unwrap_or(revision);
        let mut desired = Desired::new();
        for kv in listed.kvs() {
            if let Some((key, value)) = self.decode(layout, kv.key(), kv.value()) {
                desired.insert(key, Some(value));
            }
        }
        let written = self.write(&desired, true).await?;
        Ok((revision, written))
    }

    /// Applies the events of one watch response (whole etcd revisions) as
    /// one write request.
    async fn apply_events(
        &mut self,
        layout: &Layout,
        events: &[etcd_client::Event],
    ) -> Result<(), FollowError> {
        let mut by_revision: BTreeMap<i64, Desired> = BTreeMap::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let want = match event.event_type() {
                EventType::Put => self
                    .decode(layout, kv.key(), kv.value())
                    .map(|(k, v)| (k, Some(v))),
                EventType::Delete => layout.decode_key(kv.key()).ok().map(|k| (k, None)),
            };
            let group = by_revision.entry(kv.mod_revision()).or_default();
            match want {
                Some((key, value)) => {
                    group.insert(key, value);
                }
                // an undecodable put is as if the key were absent
                None => {
                    if let Ok(key) = layout.decode_key(kv.key()) {
                        group.insert(key, None);
                    }
                }
            }
        }
        // whole revisions merged into requests of at most MAX_BATCH_OPS
        // keys (later revisions overwrite earlier ones' keys): every etcd
        // txn lands whole, and a follower that lags catches up in few
        // requests
        let mut merged = Desired::new();
        let mut last = 0;
        for (revision, desired) in by_revision {
            if !merged.is_empty() && merged.len() + desired.len() > MAX_BATCH_OPS {
                self.write(&std::mem::take(&mut merged), false).await?;
                self.stats.applied.fetch_max(last, Ordering::AcqRel);
            }
            merged.extend(desired);
            last = revision;
        }
        if last > 0 {
            self.write(&merged, false).await?;
            self.stats.applied.fetch_max(last, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn write(&self, desired: &Desired, full: bool) -> Result<usize, FollowError> {
        let (ops, switchable) = {
            let snapshot = self.store.snapshot();
            let view = snapshot
                .map(&self.config.map)
                .ok_or_else(|| FollowError::UnknownMap(self.config.map.clone()))?;
            (
                difference(&self.config.map, view, desired, full),
                view.info().switchable,
            )
        };
        let written = ops.len();
        if written == 0 {
            return Ok(0);
        }
        if switchable {
            self.commands
                .apply(into_apply(&self.config.map, ops))
                .await?;
        } else {
            for batch in into_batches(ops) {
                self.commands.batch(batch).await?;
            }
        }
        Ok(written)
    }

    fn decode(&mut self, layout: &Layout, key: &[u8], value: &[u8]) -> Option<(Bytes, Bytes)> {
        match layout.decode(key, value) {
            Ok(entry) => Some(entry),
            Err(why) => {
                if self.reported.len() < MAX_REPORTED_KEYS && self.reported.insert(key.to_vec()) {
                    self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    warn!(map = %self.config.map, key = %String::from_utf8_lossy(key), %why,
                        "fleet: etcd key skipped");
                }
                None
            }
        }
    }
}
