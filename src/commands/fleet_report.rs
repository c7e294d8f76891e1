//! `serve`'s report-back flags: each node keeps its status under a status
//! prefix in etcd (mapsync-fleet's `Reporter`), read by `mapsync fleet
//! status`.

use clap::Args;
use mapsync_core::Store;
use mapsync_fleet::{FollowConfig, ReportConfig, Reporter};
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

/// Starts the reporter in its own span.
pub fn spawn(reporter: Reporter) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("fleet_status");
    tokio::spawn(reporter.run().instrument(span))
}
