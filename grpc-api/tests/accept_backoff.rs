//! Accepting while the process is out of file descriptors: the accept loop
//! waits (no spin), says so in rate-limited lines, and serves again once
//! descriptors are back. One test in its own binary: it lowers the
//! process's open-file limit.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::key;
use mapsync_grpc::pb;
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::server::{ConnectionLimits, Listener, ServeOptions, serve_with};

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, text: &str) -> usize {
        let bytes = self.0.lock().expect("log").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(text))
            .count()
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64
}

fn set_fd_limit(soft: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let old = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        old
    }
}

/// CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_waits_logs_rate_limited_and_recovers() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let (store, _writer) = common::ready_store();
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.endpoint();
    // connections wait in the backlog until the server runs
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    let old_limit = set_fd_limit(open_fds() + 5);
    let options = ServeOptions {
        connections: ConnectionLimits {
            max_connections: 1000,
            handshake_timeout: Duration::from_secs(30),
            ..ConnectionLimits::default()
        },
        ..ServeOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(listener, store, options, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_seconds() - before;
    eprintln!("process CPU while out of descriptors: {cpu:.3} s in 2 s");
    assert!(cpu < 0.5, "the accept loop spins: {cpu:.2} s of CPU in 2 s");
    let lines = log.lines_with("out of file descriptors");
    assert!(lines >= 1, "running out of descriptors is logged");
    let elapsed = started.elapsed().as_secs() as usize + 1;
    assert!(
        lines <= elapsed + 1,
        "rate-limited: {lines} lines in {elapsed} s"
    );

    // descriptors come back: the backlog is accepted, and clients served
    drop(silent);
    set_fd_limit(old_limit);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let attempt = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut client = MapSyncClient::new(channel);
            client
                .get(pb::GetRequest {
                    map: "flows".into(),
                    key: key(1),
                    ..Default::default()
                })
                .await
                .ok()
        };
        if let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            break reply.into_inner();
        }
        assert!(
            Instant::now() < deadline,
            "not served after the descriptors came back"
        );
    };
    assert_eq!(&reply.value[..], b"v1");
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
}
