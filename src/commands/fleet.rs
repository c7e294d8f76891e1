//! `mapsync fleet put|delete`: write entries into etcd in the fleet layout
//! (`PREFIX/HEXKEY` -> raw value bytes, or with `--format json` the value's
//! JSON text, which a node following with `--follow-format MAP=json`
//! encodes through the map's BTF) that `serve --follow` applies;
//! `mapsync fleet status`: what every node reported it applied.

use anyhow::Context;
use std::io::Write;

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
    #[command(flatten)]
    pub tls: super::fleet_tls::EtcdTlsArgs,
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// How `put` and `apply` take values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueArg {
    /// Hex bytes, written as raw bytes.
    #[default]
    Hex,
    /// JSON, written as its compact JSON text as is (not checked here: the
    /// nodes encode it through the map's BTF and count a value that does
    /// not fit as a bad key; the prefix must be followed with
    /// `--follow-format MAP=json`).
    Json,
}

/// What to write into etcd.
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Put one entry: key as hex, value as hex (or JSON with --format json).
    Put {
        /// Key bytes, hex.
        key: String,
        /// Value bytes, hex; with --format json the value as JSON.
        value: String,
        /// How the value is given.
        #[arg(long, value_enum, default_value_t = ValueArg::Hex)]
        format: ValueArg,
    },
    /// Delete one entry: key as hex.
    Delete {
        /// Key bytes, hex.
        key: String,
    },
    /// Write a whole set from a file (JSON `{"HEXKEY": "HEXVALUE"}`, with
    /// --format json `{"HEXKEY": VALUE}`; `-`: stdin) as one etcd
    /// transaction: replace (delete keys not in the file) unless --merge
    /// (only puts). Entries etcd already holds are not rewritten.
    Apply {
        /// The set file.
        file: std::path::PathBuf,
        /// How the values are given.
        #[arg(long, value_enum, default_value_t = ValueArg::Hex)]
        format: ValueArg,
        /// Only put the file's entries; keep the others.
        #[arg(long)]
        merge: bool,
        /// Most ops in the transaction: etcd's own `--max-txn-ops` (128 by
        /// default); a larger set is refused, nothing written.
        #[arg(long, value_name = "N", default_value_t = mapsync_fleet::ETCD_DEFAULT_MAX_TXN_OPS)]
        max_txn_ops: usize,
        /// The map's key size in bytes, checked for every key (0: unchecked).
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        key_size: usize,
        /// The map's value size in bytes, checked for every value (0:
        /// unchecked).
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        value_size: usize,
    },
    /// Every node's reported status: applied revision, how far behind the
    /// prefix's last change, live or gone.
    Status(super::fleet_status::StatusArgs),
}

fn hex_arg(what: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text).with_context(|| format!("{what} `{text}` is not hex"))
}

/// Lists the prefix and writes the difference to `set` as one etcd txn,
/// guarded by the listed revision (a concurrent change under the prefix
/// fails the txn: nothing written, try again).
async fn apply_set(
    client: &mut etcd_client::Client,
    layout: &mapsync_fleet::Layout,
    set: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    mode: mapsync_fleet::SetMode,
    max_txn_ops: usize,
) -> anyhow::Result<()> {
    use etcd_client::{Compare, CompareOp, GetOptions, Txn};
    let listed = client
        .get(layout.dir(), Some(GetOptions::new().with_prefix()))
        .await
        .context("etcd get")?;
    let at = listed.header().map_or(0, |h| h.revision());
    let current = listed
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect();
    let ops = mapsync_fleet::plan_set(layout, &current, set, mode);
    if ops.is_empty() {
        writeln!(
            std::io::stdout(),
            "nothing to write: etcd already holds the set (revision {at})"
        )?;
        return Ok(());
    }
    anyhow::ensure!(
        ops.len() <= max_txn_ops,
        "{} ops exceed --max-txn-ops {max_txn_ops} (etcd's own --max-txn-ops must allow them too); nothing written",
        ops.len()
    );
    let count = ops.len();
    // no key under the prefix changed since the list
    let guard = Compare::mod_revision(layout.dir(), CompareOp::Less, at + 1).with_prefix();
    let done = client
        .txn(Txn::new().when([guard]).and_then(ops))
        .await
        .context("etcd txn")?;
    anyhow::ensure!(
        done.succeeded(),
        "the prefix changed while the set was written; nothing written, run it again"
    );
    let revision = done.header().map_or(0, |h| h.revision());
    writeln!(
        std::io::stdout(),
        "{count} ops written in one transaction at revision {revision}"
    )?;
    Ok(())
}

/// Runs `mapsync fleet ...`.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let tls = args.tls.tls()?;
    let mut client = mapsync_fleet::connect(&args.endpoints, tls.as_ref())
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
        FleetCommand::Put { key, value, format } => {
            let etcd_key = layout.etcd_key(&hex_arg("key", &key)?);
            let value = match format {
                ValueArg::Hex => hex_arg("value", &value)?,
                ValueArg::Json => serde_json::from_str::<serde_json::Value>(&value)
                    .with_context(|| format!("value `{value}` is not JSON"))?
                    .to_string()
                    .into_bytes(),
            };
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
        FleetCommand::Apply {
            file,
            format,
            merge,
            max_txn_ops,
            key_size,
            value_size,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the set from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let set = match format {
                ValueArg::Hex => mapsync_fleet::parse_hex_set(&text, key_size, value_size),
                ValueArg::Json => {
                    anyhow::ensure!(
                        value_size == 0,
                        "--value-size does not apply to --format json (the nodes check values against the map's BTF)"
                    );
                    mapsync_fleet::parse_json_set(&text, key_size)
                }
            }
            .with_context(|| format!("set file {}", file.display()))?;
            let mode = if merge {
                mapsync_fleet::SetMode::Merge
            } else {
                mapsync_fleet::SetMode::Replace
            };
            apply_set(&mut client, &layout, &set, mode, max_txn_ops).await?;
        }
        FleetCommand::Status(_) => unreachable!("answered above"),
    }
    Ok(())
}
