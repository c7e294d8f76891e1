//! `mapsync delete`: remove one key.

use clap::Args;
use mapsync_client::DeleteOptions;
use serde_json::json;

use super::output;
use super::write_input::{Target, WriteArgs, parse_epoch};

/// Arguments of `mapsync delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub write: WriteArgs,
    /// The map's name.
    pub map: String,
    /// The key: hex bytes in memory order, or typed JSON with `--format json`.
    pub key: String,
    /// Compare-and-swap: delete only if the key's mod revision is N; a
    /// mismatch names the current one.
    #[arg(long, value_name = "N")]
    pub expect_revision: Option<u64>,
    /// The epoch --expect-revision belongs to (as `list` prints it).
    #[arg(long, value_parser = parse_epoch)]
    pub epoch: Option<u64>,
}

/// Removes the key (absent: an error) and prints the revision at which the
/// delete is visible.
pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let client_args = args.write.client();
    let written = client_args
        .within(async {
            let mut client = client_args.connect(None).await?;
            let target = Target::new(&mut client, &args.map, args.write.format).await?;
            let key = target.key_arg(&args.key)?;
            let mut options = DeleteOptions::new();
            if let Some(revision) = args.expect_revision {
                options = options.expect_mod_revision(revision, args.epoch.unwrap_or(0));
            }
            if let Some(deadline) = args.write.deadline() {
                options = options.timeout(deadline);
            }
            Ok(client.delete_with(&args.map, &key, &options).await?)
        })
        .await?;
    let line = if args.write.json {
        json!({
            "map": args.map,
            "op": "delete",
            "revision": written.revision,
            "epoch": format!("{:016x}", written.epoch),
        })
        .to_string()
    } else {
        format!(
            "deleted at revision {} (epoch {:016x})",
            written.revision, written.epoch
        )
    };
    output::emit(&mut std::io::stdout().lock(), &line)
}
