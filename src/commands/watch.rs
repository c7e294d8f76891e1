//! `mapsync watch`: changes as they happen.

use std::time::Duration;

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
    /// changes from revision N on (last seen + 1 to resume). N > 0 needs
    /// --epoch: revisions mean nothing across a server restart.
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
    /// The epoch --from-revision belongs to, in hex as `mapsync list` and
    /// `watch` print it. If the server has restarted since, the watch starts
    /// over: a `start_over` marker line, then the complete current state.
    #[arg(long, value_parser = parse_epoch)]
    pub epoch: Option<u64>,
    /// Seconds of silence after which `watch` pings the server, to notice
    /// one that is gone or stopped (it then reconnects and resumes, saying
    /// so on stderr); 0: no pings.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub keepalive: f64,
}

/// Prints changes until interrupted or the server goes away.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    if args.from_revision > 0 && args.epoch.is_none() {
        anyhow::bail!(
            "--from-revision {} needs --epoch: revisions mean nothing across a server restart (--from-revision 0 needs none)",
            args.from_revision
        );
    }
    let keepalive = match args.keepalive {
        0.0 => None,
        secs if secs > 0.0 && secs.is_finite() => Some(Duration::from_secs_f64(secs)),
        secs => anyhow::bail!("--keepalive {secs}: expected seconds > 0, or 0 for no pings"),
    };
    let (renderer, mut changes) = args
        .client
        .within(async {
            let (mut client, renderer) =
                args.client.connect_rendering(keepalive, &args.maps).await?;
            let options = WatchOptions::maps(args.maps.clone())
                .from_revision(args.from_revision, args.epoch.unwrap_or(0))
                .decoded(renderer.decode());
            let changes = client.watch(options).await?;
            Ok((renderer, Box::pin(changes)))
        })
        .await?;
    let mut out = std::io::stdout().lock();
    let json = args.client.json;
    let print = |out: &mut std::io::StdoutLock<'_>,
                 events: &[mapsync_client::Event]|
     -> anyhow::Result<()> {
        for event in events {
            let (key, value) = renderer.event(event)?;
            let line = if json {
                output::event_json(event, key, value)
            } else {
                output::event_text(event, &key, value.as_ref())
            };
            output::emit(out, &line)?;
        }
        Ok(())
    };
    while let Some(item) = changes.next().await {
        match item? {
            WatchItem::Events(events) => print(&mut out, &events)?,
            WatchItem::InitialStateDone { epoch, revision } if !json => {
                output::emit(
                    &mut out,
                    &format!(
                        "-- current state as of revision {revision} (epoch {epoch:016x}); live changes follow --"
                    ),
                )?;
            }
            WatchItem::InitialStateDone { .. } | WatchItem::Progress { .. } => {}
            // the watch could not resume (history compacted, or the server
            // restarted): the complete state replaces what was printed
            WatchItem::StartOver {
                reason,
                revision,
                entries,
                ..
            } => {
                let marker = if json {
                    serde_json::json!({
                        "op": "start_over",
                        "revision": revision,
                        "reason": format!("{reason:?}"),
                    })
                    .to_string()
                } else {
                    format!(
                        "-- start over ({reason:?}): current state as of revision {revision} --"
                    )
                };
                output::emit(&mut out, &marker)?;
                print(&mut out, &entries)?;
            }
        }
    }
    anyhow::bail!("the server ended the watch")
}

/// An epoch as printed by mapsync (16 hex digits; `0x` optional).
fn parse_epoch(arg: &str) -> Result<u64, String> {
    let digits = arg.strip_prefix("0x").unwrap_or(arg);
    match u64::from_str_radix(digits, 16) {
        Ok(0) | Err(_) => Err(format!(
            "`{arg}` is not an epoch: expected the 16 hex digits mapsync prints (e.g. 6b6c68d7566fd199)"
        )),
        Ok(epoch) => Ok(epoch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_hex_as_printed() {
        assert_eq!(parse_epoch("6b6c68d7566fd199"), Ok(0x6b6c68d7566fd199));
        assert_eq!(parse_epoch("0x00000000000000ff"), Ok(255));
        assert!(parse_epoch("0").is_err(), "0 is no epoch");
        assert!(parse_epoch("xyz").unwrap_err().contains("16 hex digits"));
    }
}
