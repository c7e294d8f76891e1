//! `mapsync fleet put|delete`: write entries into etcd in the fleet layout
//! (`PREFIX/HEXKEY` -> raw value bytes) that `serve --follow` applies;
//! `mapsync fleet status`: what every node reported it applied.

use anyhow::Context;
use clap::{Args, Subcommand};

/// The fleet's control side: etcd writes in the key layout.
#[derive(Args, Debug)]
pub struct FleetArgs {
    /// etcd endpoint(s), `HOST:PORT` (repeatable).
    #[arg(long = "etcd", value_name = "HOST:PORT", required = true)]
    pub endpoints: Vec<String>,
    /// The prefix a map follows (as in `--follow MAP=etcd://.../PREFIX`);
    /// required by put/delete/apply, a filter for status.
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// What to write into etcd.
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Put one entry: key and value as hex.
    Put {
        /// Key bytes, hex.
        key: String,
        /// Value bytes, hex.
        value: String,
    },
    /// Delete one entry: key as hex.
    Delete {
        /// Key bytes, hex.
        key: String,
    },
    /// Every node's reported status: applied revision, how far behind the
    /// prefix's last change, live or gone.
    Status(super::fleet_status::StatusArgs),
}

fn hex_arg(what: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text).with_context(|| format!("{what} `{text}` is not hex"))
}

/// Runs `mapsync fleet ...`.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let mut client = etcd_client::Client::connect(&args.endpoints, None)
        .await
        .with_context(|| format!("cannot reach etcd at {}", args.endpoints.join(",")))?;
    if let FleetCommand::Status(status) = &args.command {
        return super::fleet_status::run(&mut client, args.prefix.as_deref(), status).await;
    }
    let prefix = args
        .prefix
        .as_deref()
        .context("--prefix is required to write entries")?;
    let layout = mapsync_fleet::Layout::new(prefix, 0, 0);
    match args.command {
        FleetCommand::Put { key, value } => {
            let etcd_key = layout.etcd_key(&hex_arg("key", &key)?);
            let value = hex_arg("value", &value)?;
            let put = client
                .put(etcd_key, value, None)
                .await
                .context("etcd put")?;
            tracing::info!(revision = put.header().map_or(0, |h| h.revision()), "put");
        }
        FleetCommand::Delete { key } => {
            let etcd_key = layout.etcd_key(&hex_arg("key", &key)?);
            let deleted = client.delete(etcd_key, None).await.context("etcd delete")?;
            anyhow::ensure!(deleted.deleted() > 0, "no such key under the prefix");
        }
        FleetCommand::Status(_) => unreachable!("answered above"),
    }
    Ok(())
}
