//! `mapsync serve` against careless or hostile local clients: idle sockets
//! (more than its fd limit allows), sockets that send only the HTTP/2
//! preface, and every connection busy. The server must keep answering `list`
//! and never spin. (Accepting while out of file descriptors is tested in
//! process: `grpc-api/tests/accept_backoff.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ChildGuard, Server, free_port, map_arg, pin};
use mapsync_test_support::{self as support, PinDir};

/// A server on TCP with one map `flows` (1 entry), its fd limit at `nofile`.
fn tcp_server(label: &str, extra: &[&str], nofile: Option<u64>) -> (PinDir, Server) {
    let pins = PinDir::new(label);
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    support::update(&hash, &[1, 0, 0, 0], &[7; 8]).expect("seed");
    let listen = format!("127.0.0.1:{}", free_port());
    // loopback TCP with nobody authenticated: the test's own choice
    let extra: Vec<&str> = std::iter::once("--insecure-listen")
        .chain(extra.iter().copied())
        .collect();
    let server = Server::start_on(
        &pins,
        &[map_arg("flows", &hash)],
        Some(&listen),
        &extra,
        nofile,
    );
    (pins, server)
}

/// `list flows` answers within its timeout.
fn list_answers(server: &Server) -> Result<(), String> {
    let output = server.cli_within(
        &["list", "flows", "--timeout", "10"],
        Duration::from_secs(30),
    );
    if output.status.success()
        && String::from_utf8_lossy(&output.stdout).contains("entries at revision")
    {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Whether the server has closed `stream` (EOF or reset) by `deadline`.
/// Everything read meanwhile is appended to `received`.
fn closed_by(stream: &mut TcpStream, deadline: Instant, received: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // after the command: state is field 3, utime 14 and stime 15 (1-based)
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn lines_with(server: &Server, text: &str) -> usize {
    server
        .log()
        .iter()
        .filter(|line| line.contains(text))
        .count()
}

#[test]
fn idle_sockets_never_lock_clients_out_and_are_closed_after_the_handshake_timeout() {
    if !support::require_kernel() {
        return;
    }
    // fd limit 200: the connection limit is what is free after the maps, less 32
    let (_pins, server) = tcp_server("limits-idle", &["--handshake-timeout", "3"], Some(200));
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..190)
        .map(|_| TcpStream::connect(&server.endpoint).expect("connect"))
        .collect();
    let cpu_before = cpu_seconds(server.pid());
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    eprintln!("server CPU with 190 silent sockets open: {cpu:.3} s in 1 s");
    assert!(cpu < 0.5, "the server spins: {cpu:.2} s of CPU in 1 s");
    for round in 0..3 {
        list_answers(&server)
            .unwrap_or_else(|e| panic!("list {round} with 190 idle sockets open: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut junk = Vec::new();
    let mut open = 0;
    for stream in &mut idle {
        if !closed_by(stream, deadline, &mut junk) {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "every silent socket closed within 3 s of handshake timeout (+ slack)"
    );
    let elapsed = started.elapsed().as_secs() as usize;
    assert_eq!(
        lines_with(&server, "refused a connection"),
        0,
        "idle sockets make room; nothing is refused"
    );
    let limit_lines = lines_with(&server, "at the maximum of connections");
    assert!(limit_lines >= 1, "the limit is logged: {:?}", server.log());
    assert!(
        limit_lines <= elapsed + 2,
        "rate-limited: {limit_lines} lines in {elapsed} s"
    );
    let max_connections = server
        .log()
        .iter()
        .find_map(|line| common::log_field(line, "max_connections"))
        .expect("serve logs its connection limit");
    assert!(
        (100..=170).contains(&max_connections),
        "the fd limit of 200 lowered the default of 1024 to what is free: {max_connections}"
    );
    list_answers(&server).expect("list after the sockets are gone");
}

/// An HTTP/2 SETTINGS frame without settings.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[test]
fn a_preface_alone_is_closed_after_the_handshake_timeout_and_a_quiet_connection_after_the_idle_timeout()
 {
    if !support::require_kernel() {
        return;
    }
    let (_pins, server) = tcp_server(
        "limits-preface",
        &["--handshake-timeout", "2", "--idle-timeout", "4"],
        None,
    );
    let opened = Instant::now();
    let mut preface_only = TcpStream::connect(&server.endpoint).expect("connect");
    preface_only.write_all(PREFACE).expect("preface");
    let mut handshaken = TcpStream::connect(&server.endpoint).expect("connect");
    handshaken.write_all(PREFACE).expect("preface");
    handshaken.write_all(&EMPTY_SETTINGS).expect("settings");

    let mut received = Vec::new();
    assert!(
        closed_by(
            &mut preface_only,
            opened + Duration::from_secs(15),
            &mut received
        ),
        "a connection that sent only the preface is closed"
    );
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "not before the handshake timeout: {after:?}"
    );

    let mut received = Vec::new();
    assert!(
        !closed_by(
            &mut handshaken,
            opened + Duration::from_secs(3),
            &mut received
        ),
        "a connection that completed its handshake outlives the handshake timeout"
    );
    assert!(
        closed_by(
            &mut handshaken,
            opened + Duration::from_secs(25),
            &mut received
        ),
        "an idle connection is closed after the idle timeout"
    );
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(3500),
        "not before the idle timeout: {after:?}"
    );
    assert!(has_goaway(&received), "closed with GOAWAY: {received:02x?}");
    list_answers(&server).expect("still serving");
}

/// Whether the server's bytes hold a GOAWAY frame.
fn has_goaway(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes[3] == 0x7 {
            return true;
        }
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    false
}

#[test]
fn a_watch_outlives_the_idle_timeout_and_when_every_connection_is_busy_the_next_is_refused() {
    if !support::require_kernel() {
        return;
    }
    let (pins, server) = tcp_server(
        "limits-busy",
        &["--max-connections", "2", "--idle-timeout", "2"],
        None,
    );
    let watch = |_: usize| {
        let (child, lines) = server.spawn_cli(&["watch", "flows", "--json"]);
        let first = lines.next(Duration::from_secs(15));
        assert!(first.contains("\"op\":\"put\""), "{first}");
        (ChildGuard(child), lines)
    };
    let (_a, a_lines) = watch(0);
    let (b, _b_lines) = watch(1);
    // both connections carry a stream: a third is refused, at once
    let started = Instant::now();
    let refused = server.cli_within(
        &["list", "flows", "--timeout", "10"],
        Duration::from_secs(30),
    );
    assert!(
        !refused.status.success(),
        "refused while every connection is busy"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refused, not left hanging: {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // closed at once: the client sees a close or a reset, depending on timing
    assert!(
        stderr.contains("the connection to mapsync failed")
            || stderr.contains("cannot reach mapsync"),
        "says what happened: {stderr}"
    );
    assert!(
        lines_with(&server, "refused a connection") >= 1,
        "{:?}",
        server.log()
    );

    // past the idle timeout, a watch connection is still open and live
    std::thread::sleep(Duration::from_secs(4));
    support::update(&pins.join("flows"), &[2, 0, 0, 0], &[9; 8]).expect("put");
    let line = a_lines.next(Duration::from_secs(10));
    assert!(
        line.contains("02000000"),
        "the watch got the change: {line}"
    );

    drop(b);
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(error) = list_answers(&server) {
        assert!(
            Instant::now() < deadline,
            "room again once a watch is gone: {error}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
