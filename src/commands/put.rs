//! `mapsync put`: write one key.

use clap::Args;
use mapsync_client::{PutMode, PutOptions};
use serde_json::json;

use super::output;
use super::write_input::{Target, WriteArgs, parse_epoch};

/// Arguments of `mapsync put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub write: WriteArgs,
    /// The map's name.
    pub map: String,
    /// The key: hex bytes in memory order (e.g. 0a000001), or typed JSON with
    /// `--format json` (e.g. '{"addr":1,"port":80,"proto":6}').
    pub key: String,
    /// The value, likewise. Per-CPU maps: one CPU's value is written to every
    /// CPU; the full layout (hex) or `[{"cpu":N,"value":V},...]` sets each.
    pub value: String,
    /// Only create: refused if the key exists (array maps: always).
    #[arg(long, conflicts_with = "exist")]
    pub noexist: bool,
    /// Only replace: refused if the key is absent.
    #[arg(long)]
    pub exist: bool,
    /// Compare-and-swap: write only if the key's mod revision is N (0: only
    /// if the key is absent); a mismatch names the current one.
    #[arg(long, value_name = "N")]
    pub expect_revision: Option<u64>,
    /// The epoch --expect-revision belongs to (as `list` prints it); a
    /// restarted server refuses it instead of comparing another lifetime's
    /// revision.
    #[arg(long, value_parser = parse_epoch)]
    pub epoch: Option<u64>,
}

/// Writes the key and prints the revision at which it is visible.
pub async fn run(args: PutArgs) -> anyhow::Result<()> {
    let client_args = args.write.client();
    let written = client_args
        .within(async {
            let mut client = client_args.connect(None).await?;
            let target = Target::new(&mut client, &args.map, args.write.format).await?;
            let key = target.key_arg(&args.key)?;
            let value = target.value_arg(&args.value)?;
            let mut options = PutOptions::new().mode(if args.noexist {
                PutMode::NoExist
            } else if args.exist {
                PutMode::Exist
            } else {
                PutMode::Any
            });
            if let Some(revision) = args.expect_revision {
                options = options.expect_mod_revision(revision, args.epoch.unwrap_or(0));
            }
            if let Some(deadline) = args.write.deadline() {
                options = options.timeout(deadline);
            }
            Ok(client.put_with(&args.map, &key, &value, &options).await?)
        })
        .await?;
    let line = if args.write.json {
        json!({
            "map": args.map,
            "op": "put",
            "revision": written.revision,
            "epoch": format!("{:016x}", written.epoch),
        })
        .to_string()
    } else {
        format!(
            "put at revision {} (epoch {:016x})",
            written.revision, written.epoch
        )
    };
    output::emit(&mut std::io::stdout().lock(), &line)
}
