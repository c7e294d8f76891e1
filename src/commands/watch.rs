//! `mapsync watch`: changes as they happen.

use clap::Args;
use futures::StreamExt;
use mapsync_client::{WatchItem, WatchOptions};

use super::output::{self, ClientArgs};

/// Arguments of `mapsync watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Maps to watch (none: every map).
    pub maps: Vec<String>,
    /// 0: print the current entries as puts first, then live changes; N:
    /// changes from revision N on (last seen + 1 to resume).
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
    /// The epoch --from-revision belongs to (as printed by `mapsync list`);
    /// refused if the server has restarted since.
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
}

/// Prints changes until interrupted or the server goes away.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = mapsync_client::Client::connect(&args.client.endpoint).await?;
    let options = WatchOptions::maps(args.maps).from_revision(args.from_revision, args.epoch);
    let mut changes = client.watch(options).await?;
    let mut out = std::io::stdout().lock();
    while let Some(item) = changes.next().await {
        match item? {
            WatchItem::Events(events) => {
                for event in &events {
                    let line = if args.client.json {
                        output::event_json(event)
                    } else {
                        output::event_text(event)
                    };
                    output::emit(&mut out, &line)?;
                }
            }
            WatchItem::InitialStateDone { revision } if !args.client.json => {
                output::emit(
                    &mut out,
                    &format!("-- current state as of revision {revision}; live changes follow --"),
                )?;
            }
            WatchItem::InitialStateDone { .. } | WatchItem::Progress { .. } => {}
            // the watch could not resume: the complete state replaces what was printed
            WatchItem::Resync {
                reason,
                revision,
                entries,
                ..
            } => {
                if !args.client.json {
                    output::emit(
                        &mut out,
                        &format!(
                            "-- resync ({reason:?}): current state as of revision {revision} --"
                        ),
                    )?;
                }
                for event in &entries {
                    let line = if args.client.json {
                        output::event_json(event)
                    } else {
                        output::event_text(event)
                    };
                    output::emit(&mut out, &line)?;
                }
            }
        }
    }
    anyhow::bail!("the server ended the watch")
}
