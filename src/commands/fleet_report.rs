//! `serve`'s report-back flags: each node keeps its status under a status
//! prefix in etcd (mapsync-fleet's `Reporter`), read by `mapsync fleet
//! status`.

use anyhow::Context;
use clap::Args;
use mapsync_core::Store;
use mapsync_fleet::{FollowConfig, FollowStats, ReportConfig, Reporter, ValueFormat};
use tracing::Instrument;

/// Where a following node reports what it applied.
#[derive(Args, Debug, Default)]
pub struct ReportArgs {
    /// This node's name in the fleet's status (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub fleet_node: Option<String>,
    /// The etcd prefix the node's status is written under (in the etcd of
    /// the first --follow).
    #[arg(long, value_name = "PREFIX", default_value = mapsync_fleet::DEFAULT_STATUS_PREFIX)]
    pub fleet_status_prefix: String,
    /// Seconds the status key outlives the node (its lease's TTL).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub fleet_status_ttl: u64,
    #[command(flatten)]
    pub tls: super::fleet_tls::EtcdTlsArgs,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unnamed".to_owned())
}

impl ReportArgs {
    /// The node's name, checked.
    pub fn node(&self) -> anyhow::Result<String> {
        let node = self.fleet_node.clone().unwrap_or_else(host_name);
        anyhow::ensure!(
            !node.is_empty() && !node.contains('/'),
            "--fleet-node `{node}`: a node name must be non-empty and without `/`"
        );
        Ok(node)
    }

    /// The reporter of these followers (none when nothing is followed).
    pub fn reporter(
        &self,
        follows: &[FollowConfig],
        store: &Store,
    ) -> anyhow::Result<Option<Reporter>> {
        let Some(first) = follows.first() else {
            return Ok(None);
        };
        let node = self.node()?;
        let mut config =
            ReportConfig::new(first.endpoints.clone(), &self.fleet_status_prefix, &node);
        config.ttl = std::time::Duration::from_secs(self.fleet_status_ttl.max(2));
        config.tls = first.tls.clone();
        Ok(Some(Reporter::new(config, store.clone())))
    }
}

/// Applies `--follow-format MAP=json|raw` to the followers' configs.
pub fn apply_formats(formats: &[String], configs: &mut [FollowConfig]) -> anyhow::Result<()> {
    for spec in formats {
        let (map, format) = spec
            .split_once('=')
            .with_context(|| format!("--follow-format `{spec}`: want MAP=json or MAP=raw"))?;
        let format = match format {
            "json" => ValueFormat::Json,
            "raw" => ValueFormat::Raw,
            other => anyhow::bail!("--follow-format `{spec}`: `{other}` is not json or raw"),
        };
        let config = configs
            .iter_mut()
            .find(|config| config.map == map)
            .with_context(|| format!("--follow-format {spec}: no --follow names map `{map}`"))?;
        config.format = format;
    }
    Ok(())
}

/// A JSON-format follow needs a map with BTF types and one value per key.
pub fn check_format(
    config: &FollowConfig,
    snapshot: &mapsync_core::Snapshot,
) -> anyhow::Result<()> {
    if config.format != ValueFormat::Json {
        return Ok(());
    }
    let Some(view) = snapshot.map(&config.map) else {
        return Ok(());
    };
    let info = view.info();
    anyhow::ensure!(
        info.types.is_some(),
        "--follow-format {}=json: the map has no BTF key and value types",
        config.map
    );
    anyhow::ensure!(
        info.value_bytes == info.value_size,
        "--follow-format {}=json: per-CPU maps take raw values only",
        config.map
    );
    Ok(())
}

/// The running fleet side of `serve`: its followers and its reporter.
#[derive(Debug, Default)]
pub struct FleetTasks {
    /// One task per followed map.
    pub followers: Vec<tokio::task::JoinHandle<()>>,
    /// The status reporter and its stop signal (when following).
    pub reporter: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    /// Each followed map's counters, for the metrics.
    pub stats: Vec<(String, std::sync::Arc<FollowStats>)>,
}

impl FleetTasks {
    /// Stops the followers, then the reporter gracefully: it revokes its
    /// status lease so the node shows gone at once (bounded: after
    /// [`mapsync_fleet::REVOKE_TIMEOUT`] and a second more it is aborted).
    pub async fn stop(self) {
        self.followers.iter().for_each(|follower| follower.abort());
        if let Some((task, stop)) = self.reporter {
            let _ = stop.send(());
            let bound = mapsync_fleet::REVOKE_TIMEOUT + std::time::Duration::from_secs(1);
            let abort = task.abort_handle();
            if tokio::time::timeout(bound, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Starts the reporter in its own span; sending on the returned sender
/// stops it gracefully (see [`FleetTasks::stop`]).
pub fn spawn(
    reporter: Reporter,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let span = tracing::info_span!("fleet_status");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        reporter
            .run_until(async move {
                let _ = stopped.await;
            })
            .instrument(span),
    );
    (task, stop)
}
