//! `mapsync demo`: the first thing to run. Loads the demo XDP program, mirrors
//! its map, serves the gRPC API, generates traffic and shows each change live.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use mapsync_core::{ChangeEvent, Op, SubscribeFilter, WatchBatch};
use mapsync_grpc::server::{Listener, serve};
use mapsync_kernel::{DemoBlocklist, DemoWriter};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};

/// Arguments of `mapsync demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Where to serve the gRPC API while the demo runs.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Demo packets per second.
    #[arg(long, default_value_t = 5)]
    pub rate: u32,
}

const MAP: &str = "demo_pkts";
const SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 2),
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(203, 0, 113, 9),
];

/// Runs the demo until Ctrl-C or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mapsync-demo-{}", std::process::id()));
    let result = run_in(&args, &pin_dir).await;
    let _ = std::fs::remove_dir_all(&pin_dir);
    result
}

async fn run_in(args: &DemoArgs, pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    // the address first: nothing is loaded for a demo that cannot serve
    let listener = Listener::bind(&args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (choose another with --listen)",
            args.listen
        )
    })?;
    let mut demo =
        DemoWriter::load(pin_dir).context("cannot load the demo BPF program (are you root?)")?;
    let mut blocklist = DemoBlocklist::load(pin_dir)
        .context("cannot load the demo blocklist program (are you root?)")?;
    let sync = MapSync::start(SyncConfig {
        maps: vec![
            MapSpec::id(Some(MAP), demo.map_id()),
            MapSpec::switch(Some(BLOCKLIST), blocklist.outer_pin()),
        ],
        pin_dir: pin_dir.to_owned(),
        ..SyncConfig::default()
    })
    .await
    .context("cannot start mirroring the demo map")?;
    let store = sync.store().clone();
    let endpoint = listener.endpoint();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, store.clone(), async {
        let _ = server_stopped.await;
    }));

    writeln!(
        out,
        "mapsync demo\n\
         ------------\n\
         A BPF program (XDP, `demo_count`) counts packets per IPv4 source address in the hash\n\
         map `{MAP}` (kernel map id {id}). It writes through mapsync_update(), so every change\n\
         lands in mapsync's ring buffer; mapsync mirrors the map in user space and serves it.\n\
         Packets are injected with BPF_PROG_TEST_RUN ({rate}/s); now and then `demo_forget`\n\
         deletes a source through mapsync_delete().\n\n\
         Try in another terminal, while this runs:\n  \
           mapsync watch --endpoint {listen} {MAP}\n  \
           mapsync list --endpoint {listen} {MAP} --json\n  \
           bpftool map dump id {id}\n\n\
         The same packets also go through `demo_block`, an XDP program that drops sources listed\n\
         in the switchable map `{BLOCKLIST}`; every {APPLY_EVERY_SECS} s mapsync applies a new blocklist\n\
         in one atomic switch, and the program counts its verdicts per blocklist version it saw.\n\
         (`mapsync list --endpoint {listen} {BLOCKLIST}` shows the live set.)\n\n\
         revision  op      source  address          packets  bytes",
        id = demo.map_id(),
        rate = args.rate,
        listen = endpoint,
    )?;

    let mut changes = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps([MAP]))
        .context("subscribing to the demo map")?;
    let deadline = args
        .duration
        .map(|secs| Instant::now() + Duration::from_secs_f64(secs.max(0.0)));
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    let mut sent = 0u64;
    let mut switches = BlocklistSwitches::new(sync.commands(), args.rate);
    let ctrl_c = crate::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        let until_deadline = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(until_deadline) => break,
            _ = ticker.tick() => {
                let source = SOURCES[(sent as usize * 7 + sent as usize / 3) % SOURCES.len()];
                if sent % 17 == 16 {
                    demo.forget(source).context("running demo_forget")?;
                } else {
                    demo.count(source, 64 + (sent as usize % 5) * 100, 1).context("running demo_count")?;
                }
                blocklist.inject(source).context("running demo_block")?;
                if let Some(line) = switches.tick().await? {
                    writeln!(out, "{line}")?;
                }
                sent += 1;
            }
            batch = changes.next() => match batch {
                Some(Ok(WatchBatch::Events(events))) => {
                    for event in events.iter() {
                        writeln!(out, "{}", describe(event))?;
                    }
                }
                Some(Ok(WatchBatch::InitialStateDone { .. })) => {}
                Some(Err(error)) => anyhow::bail!("watch ended: {error}"),
                None => anyhow::bail!("watch ended"),
            },
        }
    }
    let snapshot = store.snapshot();
    let entries = snapshot.map(MAP).map_or(0, |m| m.len());
    writeln!(
        out,
        "\n{sent} packets injected; mirror at revision {} holds {entries} addresses; {} records read, {} lost.",
        snapshot.revision(),
        sync.stats().records,
        sync.stats().drops,
    )?;
    switches.report(&blocklist, &mut out)?;
    let _ = stop_server.send(());
    server
        .await
        .context("server task")?
        .context("gRPC server")?;
    sync.shutdown().await.context("ingest task")?;
    Ok(())
}

// ---- the switch part of the demo (issue 11, item 8) ----

/// Name of the demo's switchable blocklist.
const BLOCKLIST: &str = "demo_blocklist";
/// Seconds between two blocklist applies.
const APPLY_EVERY_SECS: u32 = 3;

/// The blocklists the demo applies, and the set of every version made live
/// (version 1: the empty set the blocklist starts with).
struct BlocklistSwitches {
    commands: mapsync_core::CommandHandle,
    every_ticks: u64,
    ticks: u64,
    sets: std::collections::BTreeMap<u64, Vec<Ipv4Addr>>,
}

impl BlocklistSwitches {
    fn new(commands: mapsync_core::CommandHandle, rate: u32) -> Self {
        Self {
            commands,
            every_ticks: u64::from(rate.max(1) * APPLY_EVERY_SECS),
            ticks: 0,
            sets: [(1, Vec::new())].into(),
        }
    }

    /// Applies the next blocklist when it is due; returns the line to show.
    async fn tick(&mut self) -> anyhow::Result<Option<String>> {
        self.ticks += 1;
        if !self.ticks.is_multiple_of(self.every_ticks) {
            return Ok(None);
        }
        let live = *self.sets.keys().next_back().expect("version 1");
        // version v blocks the sources whose bit is set in v
        let set: Vec<Ipv4Addr> = SOURCES
            .iter()
            .enumerate()
            .filter(|(bit, _)| (live + 1) & (1 << bit) != 0)
            .map(|(_, source)| *source)
            .collect();
        let entries = set
            .iter()
            .map(|source| {
                (
                    bytes::Bytes::copy_from_slice(&source.octets()),
                    Some(bytes::Bytes::copy_from_slice(&1u32.to_ne_bytes())),
                )
            })
            .collect();
        let outcome = self
            .commands
            .apply(mapsync_core::control::Apply {
                map: BLOCKLIST.into(),
                mode: mapsync_core::control::ApplyMode::Replace,
                entries,
                expect_version: Some(live),
            })
            .await
            .context("applying a blocklist")?;
        let applied = outcome.applied.context("the apply reported no switch")?;
        self.sets.insert(applied.version, set.clone());
        Ok(Some(format!(
            "{:>8}  apply   api     blocklist version {} = {} ({} keys changed, switch {} us)",
            outcome.revision,
            applied.version,
            show(&set),
            applied.changed,
            applied.switch_ns / 1000
        )))
    }

    /// Prints, per version, the packets `demo_block` counted and whether
    /// every verdict matched that version's set; an error if one did not.
    fn report(&self, blocklist: &DemoBlocklist, out: &mut impl Write) -> anyhow::Result<()> {
        use mapsync_kernel::blocklist::XDP_DROP;
        let verdicts = blocklist.verdicts().context("reading demo_verdicts")?;
        writeln!(
            out,
            "\nverdicts of demo_block per blocklist version it saw:"
        )?;
        let mut wrong = 0u64;
        for (version, set) in &self.sets {
            let (mut packets, mut dropped, mut mismatched) = (0, 0, 0);
            for ((_, source, verdict), count) in verdicts.range(
                (*version, Ipv4Addr::UNSPECIFIED, 0)..=(*version, Ipv4Addr::BROADCAST, u32::MAX),
            ) {
                packets += count;
                if *verdict == XDP_DROP {
                    dropped += count;
                }
                if (*verdict == XDP_DROP) != set.contains(source) {
                    mismatched += count;
                }
            }
            wrong += mismatched;
            writeln!(
                out,
                "  version {version:>3} blocks {:<40} {packets:>5} packets, {dropped:>5} dropped: {}",
                show(set),
                if mismatched == 0 {
                    "every verdict matches this version's set".to_owned()
                } else {
                    format!("{mismatched} verdicts DO NOT match")
                }
            )?;
        }
        if wrong > 0 {
            anyhow::bail!("{wrong} verdicts did not match the blocklist of their version");
        }
        Ok(())
    }
}

fn show(set: &[Ipv4Addr]) -> String {
    if set.is_empty() {
        return "{}".into();
    }
    let names: Vec<String> = set.iter().map(ToString::to_string).collect();
    format!("{{{}}}", names.join(", "))
}

/// One readable line for a change to the demo map.
fn describe(event: &ChangeEvent) -> String {
    let address = <[u8; 4]>::try_from(&event.key[..]).map_or_else(
        |_| hex::encode(&event.key),
        |o| Ipv4Addr::from(o).to_string(),
    );
    let counts = match (&event.op, &event.value) {
        (Op::Put, Some(value)) if value.len() >= 16 => format!(
            "{:>7}  {:>5}",
            u64::from_ne_bytes(value[..8].try_into().expect("8 bytes")),
            u64::from_ne_bytes(value[8..16].try_into().expect("8 bytes")),
        ),
        _ => format!("{:>7}  {:>5}", "-", "-"),
    };
    format!(
        "{:>8}  {:<6}  {:<6}  {:<15}  {counts}",
        event.revision,
        event.op.as_str(),
        event.source.as_str(),
        address
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mapsync_core::EventSource;

    #[test]
    fn a_change_reads_as_address_and_counts() {
        let mut value = 3u64.to_ne_bytes().to_vec();
        value.extend(180u64.to_ne_bytes());
        let event = ChangeEvent {
            revision: 12,
            map: MAP.into(),
            op: Op::Put,
            key: Bytes::from_static(&[192, 0, 2, 1]),
            value: Some(value.into()),
            source: EventSource::Emit,
            prev_value: None,
            prev_mod_revision: 0,
        };
        assert_eq!(
            describe(&event),
            "      12  put     emit    192.0.2.1              3    180"
        );
    }
}
