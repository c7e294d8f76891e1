//! The CLI and `serve` when things are wrong: a stopped server, a port that
//! never speaks, bad endpoints and listen addresses, a second server on the
//! same socket. Every failure is one line naming its cause once, a non-zero
//! exit, and in time.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ChildGuard, Lines, Server, map_arg, mapsync, pin, wait_output};
use mapsync_test_support::{self as support, PinDir};

fn one_map_server(label: &str) -> (PinDir, Server) {
    let pins = PinDir::new(label);
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    support::update(&hash, &[1, 0, 0, 0], &[7; 8]).expect("seed");
    let server = Server::start(&pins, &[map_arg("flows", &hash)]);
    (pins, server)
}

/// Runs `mapsync ARGS`, which must fail within `within`; its stderr, which
/// must be one line.
fn fails_in_one_line(args: &[&str], within: Duration) -> String {
    let started = Instant::now();
    let child = mapsync()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mapsync");
    let output = wait_output(child, within + Duration::from_secs(10));
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(
        took <= within,
        "{args:?} took {took:?} (allowed {within:?}): {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn occurrences(text: &str, part: &str) -> usize {
    text.matches(part).count()
}

#[test]
fn list_and_get_end_within_their_timeout_against_a_stopped_server_and_a_silent_port() {
    if !support::require_kernel() {
        return;
    }
    let (_pins, server) = one_map_server("cli-stopped");
    server.signal("STOP");
    server.wait_stopped(Duration::from_secs(5));
    let endpoint = server.endpoint.clone();
    for command in [&["list", "flows"][..], &["get", "flows", "01000000"][..]] {
        let mut args = command.to_vec();
        args.extend(["--endpoint", &endpoint, "--timeout", "2"]);
        let stderr = fails_in_one_line(&args, Duration::from_secs(8));
        assert!(stderr.contains("within 2 s"), "{stderr}");
    }
    server.signal("CONT");
    assert!(
        server.cli(&["list", "flows"]).status.success(),
        "serving again"
    );

    // a port that accepts and never speaks
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = silent.local_addr().expect("addr").to_string();
    for command in [
        &["list", "flows"][..],
        &["get", "flows", "01000000"][..],
        &["watch", "flows"][..],
    ] {
        let mut args = command.to_vec();
        args.extend(["--endpoint", &endpoint, "--timeout", "2"]);
        let stderr = fails_in_one_line(&args, Duration::from_secs(8));
        assert!(
            stderr.contains(&endpoint) && stderr.contains("within 2 s"),
            "{stderr}"
        );
    }
}

#[test]
fn watch_notices_a_stopped_server_and_resumes_when_it_continues() {
    if !support::require_kernel() {
        return;
    }
    let (pins, server) = one_map_server("cli-watch-dead");
    // --from-revision 0 needs no --epoch
    let mut child = mapsync()
        .args([
            "watch",
            "flows",
            "--json",
            "--from-revision",
            "0",
            "--keepalive",
            "1",
        ])
        .args(["--endpoint", &server.endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = Lines::new(child.stdout.take().expect("stdout"));
    let stderr = Lines::new(child.stderr.take().expect("stderr"));
    let _watch = ChildGuard(child);
    assert!(
        stdout.next(Duration::from_secs(10)).contains("01000000"),
        "initial state"
    );

    server.signal("STOP");
    server.wait_stopped(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut said = Vec::new();
    while !said
        .iter()
        .any(|line: &String| line.contains("connection lost") && line.contains("reconnecting"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match stderr.next_within(left) {
            Some(line) => said.push(line),
            None => panic!("the watch did not say it lost the server: {said:?}"),
        }
    }
    server.signal("CONT");
    support::update(&pins.join("flows"), &[2, 0, 0, 0], &[9; 8]).expect("put");
    let line = stdout.next(Duration::from_secs(20));
    assert!(line.contains("02000000"), "resumed: {line}");
}

#[test]
fn bad_endpoints_and_unreachable_servers_are_one_line_naming_the_cause_once() {
    let within = Duration::from_secs(8);
    let stderr = fails_in_one_line(&["list", "flows", "--endpoint", "127.0.0.1"], within);
    assert!(stderr.contains("no port"), "{stderr}");
    let stderr = fails_in_one_line(
        &["list", "flows", "--endpoint", "ftp://127.0.0.1:1"],
        within,
    );
    assert!(stderr.contains("unsupported scheme"), "{stderr}");
    let stderr = fails_in_one_line(&["get", "flows", "00", "--endpoint", "/tmp/x.sock"], within);
    assert!(stderr.contains("unix:"), "{stderr}");
    let stderr = fails_in_one_line(
        &[
            "list",
            "flows",
            "--endpoint",
            "unix:/nonexistent/mapsync.sock",
        ],
        within,
    );
    assert_eq!(
        occurrences(&stderr, "No such file or directory"),
        1,
        "{stderr}"
    );
    let closed = common::free_port();
    let endpoint = format!("127.0.0.1:{closed}");
    let stderr = fails_in_one_line(&["list", "flows", "--endpoint", &endpoint], within);
    assert_eq!(occurrences(&stderr, "Connection refused"), 1, "{stderr}");
    assert!(
        !stderr.contains("tcp connect error: tcp connect error"),
        "{stderr}"
    );
    let stderr = fails_in_one_line(
        &[
            "watch",
            "flows",
            "--endpoint",
            &endpoint,
            "--from-revision",
            "5",
        ],
        within,
    );
    assert!(stderr.contains("needs --epoch"), "{stderr}");
}

#[test]
fn serve_checks_its_addresses_before_loading_anything_and_logs_plainly() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("cli-serve-order");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    let map = map_arg("flows", &hash);
    let capture = pins.join("capture").display().to_string();
    let serve = |listen: &str| {
        let child = mapsync()
            .args([
                "serve",
                "--insecure-listen",
                "--listen",
                listen,
                "--pin-dir",
                &capture,
                "--map",
                &map,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        wait_output(child, Duration::from_secs(20))
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    for (listen, cause) in [
        (taken.as_str(), "Address already in use"),
        ("nonsense", "invalid listen address"),
    ] {
        let output = serve(listen);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(occurrences(&stderr, cause), 1, "the cause once: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "one line, nothing loaded first: {stderr}"
        );
        assert!(
            !stderr.contains("attached") && !stderr.contains("initial dump"),
            "nothing loaded before the address was checked: {stderr}"
        );
    }

    // a log into a file (not a terminal, NO_COLOR unset) has no colour codes
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_path = log_dir.path().join("serve.log");
    let socket = format!("unix:{}", log_dir.path().join("m.sock").display());
    let child = mapsync()
        .args([
            "serve",
            "--listen",
            &socket,
            "--pin-dir",
            &capture,
            "--map",
            &map,
        ])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn serve");
    let _serve = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).expect("read log");
        if log.contains("health: serving") {
            break log;
        }
        assert!(Instant::now() < deadline, "serve did not start: {log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file: {log:?}");
    assert!(log.contains(" INFO "), "plain level names: {log}");
}

#[test]
fn a_second_serve_on_the_same_socket_is_refused_and_the_first_keeps_its_socket() {
    if !support::require_kernel() {
        return;
    }
    let (pins, mut server) = one_map_server("cli-takeover");
    let path = server
        .endpoint
        .strip_prefix("unix:")
        .expect("a unix endpoint")
        .to_owned();
    let map = map_arg("flows", &pins.join("flows"));
    let capture = pins.join("capture2").display().to_string();
    let second = |extra: &[&str]| {
        let child = mapsync()
            .args([
                "serve",
                "--listen",
                &server.endpoint,
                "--pin-dir",
                &capture,
                "--map",
                &map,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        wait_output(child, Duration::from_secs(20))
    };
    let output = second(&[]);
    assert!(!output.status.success(), "a second server is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("another server is listening on"),
        "{stderr}"
    );
    assert!(
        std::path::Path::new(&path).exists(),
        "the first server's socket is still there"
    );
    assert!(
        server.cli(&["list", "flows"]).status.success(),
        "the first still answers"
    );

    // the first stopped, even while its socket file stays: a stopped server
    // still holds it
    server.signal("STOP");
    server.wait_stopped(Duration::from_secs(5));
    let output = second(&[]);
    assert!(
        !output.status.success(),
        "a stopped server's socket is not taken either"
    );
    server.signal("CONT");

    // a server that is gone leaves a stale socket: the next one replaces it
    server.kill9();
    assert!(
        std::path::Path::new(&path).exists(),
        "SIGKILL leaves the socket file"
    );
    server.restart();
    assert!(server.cli(&["list", "flows"]).status.success());
}
