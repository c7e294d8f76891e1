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
use mapsync_kernel::DemoWriter;
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
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::id(Some(MAP), demo.map_id())],
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
    let _ = stop_server.send(());
    server
        .await
        .context("server task")?
        .context("gRPC server")?;
    sync.shutdown().await.context("ingest task")?;
    Ok(())
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
