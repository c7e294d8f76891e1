//! The memory a server spends on watches nobody reads: 400 streams from
//! revision 0 on a map of 4,000 x 4 KiB values (16 MiB of values), never
//! read. The server runs in its own process (this test binary, run again as
//! `server_process`) so its resident set is measured alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_core::{LogLimits, MapInfo, MapKind, Store};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_request::Request as Req};
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::service::Limits;
use tonic::transport::Channel;

const ENTRIES: u32 = 4000;
const VALUE_BYTES: usize = 4096;
const STREAMS: usize = 400;
const STREAMS_PER_CONNECTION: usize = 10;
const CHILD_ENV: &str = "MAPSYNC_WATCH_MEMORY_SERVER";

/// The server side, run in a child process by [`unread_watches_keep_the_server_within_its_budget`]:
/// prints `endpoint=...`, answers `stats` lines with the service's counters,
/// and exits when its stdin closes.
#[test]
#[ignore = "the server process of the memory test; run by it"]
fn server_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (store, mut writer) = Store::new(LogLimits::default());
        let info = MapInfo {
            name: "big".into(),
            id: 1,
            kernel_name: "big".into(),
            kind: MapKind::Hash,
            key_size: 4,
            value_size: VALUE_BYTES as u32,
            max_entries: ENTRIES,
            value_bytes: VALUE_BYTES as u32,
            types: None,
            switchable: false,
        };
        let entries = (0..ENTRIES)
            .map(|i| {
                (
                    Bytes::from(i.to_be_bytes().to_vec()),
                    Bytes::from(vec![i as u8; VALUE_BYTES]),
                    1,
                )
            })
            .collect();
        writer.add_map(info, entries, 0);
        writer.set_ready();
        let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = listener.endpoint();
        let options = ServeOptions::default();
        let stats = options.stats.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(listener, store, options, async {
            let _ = stopped.await;
        }));
        let mut out = std::io::stdout();
        writeln!(out, "endpoint={endpoint}").expect("stdout");
        out.flush().expect("stdout");
        let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            if line == "stats" {
                writeln!(
                    out,
                    "stats {} {} {} {}",
                    stats.streams(),
                    stats.watches(),
                    stats.queued_messages(),
                    stats.queued_bytes()
                )
                .expect("stdout");
                out.flush().expect("stdout");
            }
        }
        // the parent is gone: no graceful drain of streams nobody reads
        drop((writer, stop, server));
        std::process::exit(0);
    });
}

struct ServerProcess {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    endpoint: String,
}

impl ServerProcess {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--ignored", "--exact", "server_process", "--nocapture"])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let endpoint = loop {
            let line = lines.next().expect("server output").expect("utf-8");
            if let Some(endpoint) = line.strip_prefix("endpoint=") {
                break format!("http://{endpoint}");
            }
        };
        Self {
            child,
            lines,
            endpoint,
        }
    }

    fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// streams, watches, queued messages, queued bytes.
    fn stats(&mut self) -> [usize; 4] {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "stats").expect("stdin");
        stdin.flush().expect("stdin");
        loop {
            let line = self.lines.next().expect("server output").expect("utf-8");
            if let Some(stats) = line.strip_prefix("stats ") {
                let numbers: Vec<usize> = stats
                    .split(' ')
                    .map(|n| n.parse().expect("a number"))
                    .collect();
                return numbers.try_into().expect("four numbers");
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

const MIB: f64 = (1 << 20) as f64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watches_keep_the_server_within_its_budget() {
    let mut server = ServerProcess::start();
    let idle = server.rss_bytes();
    let mut held = Vec::new();
    for _ in 0..STREAMS / STREAMS_PER_CONNECTION {
        let channel = Channel::from_shared(server.endpoint.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut client = MapSyncClient::new(channel);
        for _ in 0..STREAMS_PER_CONNECTION {
            let (requests, rx) = tokio::sync::mpsc::channel(1);
            let create = pb::WatchRequest {
                request: Some(Req::Create(pb::WatchCreateRequest {
                    maps: vec!["big".into()],
                    ..Default::default()
                })),
            };
            requests.send(create).await.expect("queued");
            let responses = client
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("open")
                .into_inner();
            held.push((requests, responses));
        }
    }
    let limits = Limits::default();
    let started = Instant::now();
    let mut most = 0;
    let mut most_bytes = 0;
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        most = most.max(server.rss_bytes());
        most_bytes = most_bytes.max(server.stats()[3]);
    }
    let [streams, watches, queued, _] = server.stats();
    assert_eq!((streams, watches), (STREAMS, STREAMS));
    eprintln!(
        "idle {:.1} MiB; with {STREAMS} unread streams: most {:.1} MiB resident, most {:.1} MiB counted, {queued} messages queued",
        idle as f64 / MIB,
        most as f64 / MIB,
        most_bytes as f64 / MIB,
    );
    // what the budgets allow, and the transport's few messages per stream
    let counted_bound = limits.server_budget_bytes + STREAMS * (limits.max_message_bytes + 64);
    assert!(
        most_bytes <= counted_bound,
        "counted {most_bytes} > {counted_bound}"
    );
    let transport = STREAMS * 4 * (limits.max_message_bytes + (32 << 10));
    let resident_bound = (limits.server_budget_bytes + transport) as u64;
    assert!(
        most - idle <= resident_bound,
        "resident growth {:.1} MiB > {:.1} MiB",
        (most - idle) as f64 / MIB,
        resident_bound as f64 / MIB
    );
    drop(held);
    let closed = Instant::now();
    let after = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = server.rss_bytes();
        let [streams, watches, queued, bytes] = server.stats();
        let released = streams == 0 && watches == 0 && queued == 0 && bytes == 0;
        if released && rss <= idle + (16 << 20) {
            break rss;
        }
        assert!(
            closed.elapsed() < Duration::from_secs(20),
            "not released 20 s after the clients left: {:.1} MiB, {streams} streams, {watches} watches, {queued} messages, {bytes} bytes",
            rss as f64 / MIB
        );
    };
    eprintln!(
        "{:.1} MiB resident {:.1} s after the clients left",
        after as f64 / MIB,
        closed.elapsed().as_secs_f64()
    );
}
