//! The node's side of report back: keeps `S/live/NODE` (leased) and
//! `S/seen/NODE` up to date with what its followers applied (see
//! [`crate::status`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::PutOptions;
use mapsync_core::Store;
use mapsync_core::ratelimit::LogLimiter;
use rand::Rng;
use tracing::{info, warn};

use crate::connect::{EtcdTls, connect};
use crate::follower::FollowStats;
use crate::status::{MapStatus, NodeStatus, StatusLayout};

/// Where and how often a node reports.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// etcd endpoints, `HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The status prefix (see [`StatusLayout`]).
    pub status_prefix: String,
    /// The node's name.
    pub node: String,
    /// The lease's time to live: the live key is gone this long after the
    /// node stopped keeping it alive.
    pub ttl: Duration,
    /// How often the status is checked and written when it changed.
    pub every: Duration,
    /// First wait after an error; doubled up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    /// Longest wait after errors.
    pub backoff_max: Duration,
    /// TLS to etcd; `None`: plain text.
    pub tls: Option<EtcdTls>,
}

impl ReportConfig {
    /// A config with a 10 s lease, checked every 500 ms.
    pub fn new(endpoints: Vec<String>, status_prefix: &str, node: &str) -> Self {
        Self {
            endpoints,
            status_prefix: status_prefix.to_owned(),
            node: node.to_owned(),
            ttl: Duration::from_secs(10),
            every: Duration::from_millis(500),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Why a report session ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd says the lease is gone (it expired).
    #[error("the status lease expired")]
    LeaseExpired,
}

/// How long a graceful stop waits for etcd to revoke the status lease.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A session ended by the stop signal (the lease revoked, or tried).
struct Stopped;

/// One followed map reported.
#[derive(Debug, Clone)]
struct Reported {
    map: String,
    prefix: String,
    stats: Arc<FollowStats>,
}

/// Reports a node's followers into etcd; [`Reporter::run`] never returns.
#[derive(Debug)]
pub struct Reporter {
    config: ReportConfig,
    store: Store,
    maps: Vec<Reported>,
    seen_written: bool,
    warn_limit: LogLimiter,
}

impl Reporter {
    /// A reporter of the node whose mirror is `store`.
    pub fn new(config: ReportConfig, store: Store) -> Self {
        Self {
            config,
            store,
            maps: Vec::new(),
            seen_written: false,
            warn_limit: LogLimiter::default(),
        }
    }

    /// Reports the follower of `map` (following `prefix`) with these stats.
    pub fn add(&mut self, map: &str, prefix: &str, stats: Arc<FollowStats>) {
        self.maps.push(Reported {
            map: map.to_owned(),
            prefix: prefix.to_owned(),
            stats,
        });
    }

    /// The node's status now.
    pub fn status(&self) -> NodeStatus {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        NodeStatus {
            node: self.config.node.clone(),
            mapsync_revision: self.store.revision(),
            epoch: self.store.epoch().0,
            updated_at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            maps: self
                .maps
                .iter()
                .map(|m| MapStatus {
                    map: m.map.clone(),
                    prefix: m.prefix.clone(),
                    applied_revision: m.stats.applied_revision(),
                    bad_keys: m.stats.undecodable(),
                    reverted: m.stats.reverted(),
                    relists: m.stats.relists(),
                    errors: m.stats.errors(),
                })
                .collect(),
        }
    }

    /// Reports until dropped (abort its task to stop it; the live key then
    /// goes when its lease expires). [`Reporter::run_until`] stops
    /// gracefully instead.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Reports until `stop` completes, then revokes the status lease (its
    /// live key goes at once, so the node shows gone without waiting for
    /// the TTL) and returns. The revoke is given [`REVOKE_TIMEOUT`]; an
    /// unreachable etcd leaves the key to expire with its lease.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut backoff = self.config.backoff_min;
        loop {
            let started = Instant::now();
            let err = match self.session(stop.as_mut()).await {
                Ok(Stopped) => return,
                Err(err) => err,
            };
            if let Some(suppressed) = self.warn_limit.check() {
                warn!(node = %self.config.node, error = %err, suppressed, "fleet status: retrying");
            }
            if started.elapsed() > self.config.ttl {
                backoff = self.config.backoff_min;
            }
            let jitter = rand::rng().random_range(0.5..1.0);
            tokio::select! {
                _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                _ = stop.as_mut() => return,
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    async fn session(
        &mut self,
        mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Stopped, ReportError> {
        let layout = StatusLayout::new(&self.config.status_prefix);
        let mut client = connect(&self.config.endpoints, self.config.tls.as_ref()).await?;
        let ttl = i64::try_from(self.config.ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let lease = client.lease_grant(ttl, None).await?.id();
        let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
        let live = layout.live_key(&self.config.node);
        if !self.seen_written {
            let json = serde_json::to_vec(&self.status()).expect("a status serializes");
            client
                .put(layout.seen_key(&self.config.node), json, None)
                .await?;
            self.seen_written = true;
            info!(node = %self.config.node, key = %live, "fleet status: reporting");
        }
        let mut last: Option<NodeStatus> = None;
        let mut written_at = Instant::now();
        let mut check = tokio::time::interval(self.config.every);
        let mut keep = tokio::time::interval(self.config.ttl / 3);
        loop {
            tokio::select! {
                _ = check.tick() => {
                    let now = self.status();
                    let same = last.as_ref().is_some_and(|l| NodeStatus { updated_at_ms: now.updated_at_ms, ..l.clone() } == now);
                    // unchanged: rewritten once a TTL so updated_at stays fresh
                    if same && written_at.elapsed() < self.config.ttl {
                        continue;
                    }
                    let json = serde_json::to_vec(&now).expect("a status serializes");
                    client.put(live.as_str(), json, Some(PutOptions::new().with_lease(lease))).await?;
                    last = Some(now);
                    written_at = Instant::now();
                }
                _ = keep.tick() => keeper.keep_alive().await?,
                _ = stop.as_mut() => {
                    match tokio::time::timeout(REVOKE_TIMEOUT, client.lease_revoke(lease)).await {
                        Ok(Ok(_)) => info!(node = %self.config.node, "fleet status: lease revoked, the node shows gone"),
                        Ok(Err(err)) => warn!(node = %self.config.node, error = %err, "fleet status: cannot revoke the lease; the live key expires with it"),
                        Err(_) => warn!(node = %self.config.node, "fleet status: revoking the lease timed out; the live key expires with it"),
                    }
                    return Ok(Stopped);
                }
                answer = answers.message() => match answer? {
                    Some(answer) if answer.ttl() > 0 => {}
                    _ => return Err(ReportError::LeaseExpired),
                },
            }
        }
    }
}
