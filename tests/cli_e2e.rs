//! `mapsync serve` and the CLI end to end on a real kernel, with bpftool as
//! the writer (a process that is not ours).

mod common;

use std::time::Duration;

use common::{HexMap, Server, kernel_hex, map_arg, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};
use serde_json::{Value, json};

/// `mapsync list MAP --json` against `server`, which must succeed.
fn listed(server: &Server, map: &str) -> HexMap {
    common::listed(server, map, Duration::from_secs(30)).expect("`mapsync list` succeeds")
}

#[test]
fn list_equals_bpftool_dump_and_watch_json_shows_bpftool_writes_as_they_happen() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-watch");
    let hash = pin(&pins, "flows");
    let array = pin(&pins, "limits");
    support::create_map(&hash, "hash", 4, 8, 128, "flows");
    support::create_map(&array, "array", 4, 4, 4, "limits");
    support::update(&hash, &[1, 0, 0, 0], &[1, 2, 3, 4, 5, 6, 7, 8]).expect("seed");
    let server = Server::start(&pins, &[map_arg("flows", &hash), map_arg("limits", &array)]);

    assert_eq!(listed(&server, "flows"), kernel_hex(&hash));
    assert_eq!(listed(&server, "limits"), kernel_hex(&array));

    // from revision 0: the current entries first, as puts
    let (mut watch, lines) = server.spawn_cli(&["watch", "flows", "limits", "--json"]);
    let mut initial = Vec::new();
    for _ in 0..5 {
        initial.push(
            serde_json::from_str::<Value>(&lines.next(Duration::from_secs(10))).expect("JSON line"),
        );
    }
    assert!(initial.iter().all(|e| e["op"] == "put"));
    assert!(initial.iter().any(|e| e["map"] == "flows"
        && e["key"] == "01000000"
        && e["value"] == "0102030405060708"));
    assert_eq!(
        initial.iter().filter(|e| e["map"] == "limits").count(),
        4,
        "every array index"
    );
    let last_initial = initial
        .iter()
        .map(|e| e["revision"].as_u64().expect("revision"))
        .max()
        .expect("some");

    support::update(&hash, &[2, 0, 0, 0], &[9; 8]).expect("put");
    let first = serde_json::from_str::<Value>(&lines.next(Duration::from_secs(5))).expect("JSON");
    assert_eq!(
        first,
        json!({"revision": last_initial + 1, "map": "flows", "op": "put", "key": "02000000", "value": "0909090909090909"})
    );
    support::delete(&hash, &[1, 0, 0, 0]).expect("delete");
    support::update(&array, &[2, 0, 0, 0], &[0xff, 0, 0, 0]).expect("array put");
    let second = serde_json::from_str::<Value>(&lines.next(Duration::from_secs(5))).expect("JSON");
    let third = serde_json::from_str::<Value>(&lines.next(Duration::from_secs(5))).expect("JSON");
    assert_eq!(
        second,
        json!({"revision": last_initial + 2, "map": "flows", "op": "delete", "key": "01000000", "value": null})
    );
    assert_eq!(
        third,
        json!({"revision": last_initial + 3, "map": "limits", "op": "put", "key": "02000000", "value": "ff000000"})
    );
    assert!(
        lines.next_within(Duration::from_millis(300)).is_none(),
        "each change exactly once"
    );
    let _ = watch.kill();

    // resume from a revision of the epoch `list` names: only what came after it
    let listing = server.cli(&["list", "flows"]);
    let header = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .next()
        .expect("a header line")
        .to_owned();
    let epoch = header
        .split_once("(epoch ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("the header names the epoch: {header}"))
        .to_owned();
    let (mut resumed, lines) = server.spawn_cli(&[
        "watch",
        "flows",
        "--json",
        "--from-revision",
        &(last_initial + 2).to_string(),
        "--epoch",
        &epoch,
    ]);
    let line = serde_json::from_str::<Value>(&lines.next(Duration::from_secs(5))).expect("JSON");
    assert_eq!(line["revision"], last_initial + 2);
    assert_eq!(line["op"], "delete");
    let _ = resumed.kill();

    assert_eq!(listed(&server, "flows"), kernel_hex(&hash));
    let value = server.cli(&["get", "flows", "02000000", "--json"]);
    assert!(
        value.status.success(),
        "{}",
        String::from_utf8_lossy(&value.stderr)
    );
    assert!(String::from_utf8_lossy(&value.stdout).contains("0909090909090909"));
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-errors");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 16, "flows");
    let mut server = Server::start(&pins, &[map_arg("flows", &hash)]);

    let unknown = server.cli(&["list", "nope"]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("unknown map") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(
        stderr.starts_with("error: "),
        "a one-line message, not a debug dump: {stderr}"
    );

    let wrong_size = server.cli(&["get", "flows", "0102"]);
    assert!(!wrong_size.status.success());
    let stderr = String::from_utf8_lossy(&wrong_size.stderr);
    assert!(
        stderr.contains("4-byte keys") && stderr.contains("2 bytes"),
        "{stderr}"
    );

    let missing = server.cli(&["get", "flows", "07000000"]);
    assert!(!missing.status.success(), "a missing key is an error exit");

    assert!(server.is_running());
    assert!(
        server.cli(&["list", "flows"]).status.success(),
        "still serving after bad requests"
    );

    let unreachable = mapsync()
        .args([
            "list",
            "--endpoint",
            "unix:/nonexistent/mapsync.sock",
            "flows",
        ])
        .output()
        .expect("run");
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("unix:/nonexistent/mapsync.sock"),
        "names the endpoint: {stderr}"
    );
}

#[test]
fn serve_refuses_bad_maps_with_a_message_and_a_failure_exit() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-serve-errors");
    let missing = pin(&pins, "missing");
    let output = mapsync()
        .args([
            "serve",
            "--insecure-listen",
            "--listen",
            "127.0.0.1:0",
            "--pin-dir",
        ])
        .arg(pins.join("capture"))
        .args(["--map", &missing.display().to_string()])
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open pinned object") && stderr.contains("missing"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause once: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let queue = pin(&pins, "jobs");
    support::create_map(&queue, "queue", 0, 4, 8, "jobs");
    let output = mapsync()
        .args([
            "serve",
            "--insecure-listen",
            "--listen",
            "127.0.0.1:0",
            "--pin-dir",
        ])
        .arg(pins.join("capture"))
        .args(["--map", &queue.display().to_string()])
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot mirror"));

    let output = mapsync()
        .args(["serve", "--insecure-listen", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to mirror"));
}

#[test]
fn the_demo_runs_for_a_given_duration_and_shows_changes() {
    if !support::require_kernel() {
        return;
    }
    let output = mapsync()
        .args([
            "demo",
            "--duration",
            "2",
            "--rate",
            "20",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("mapsync watch --endpoint"),
        "explains what to try: {stdout}"
    );
    let puts = stdout
        .lines()
        .filter(|l| l.contains(" put ") && l.contains(" emit "))
        .count();
    assert!(
        puts >= 10,
        "shows the program's writes live ({puts} shown):\n{stdout}"
    );
    assert!(stdout.contains("lost"), "ends with a summary: {stdout}");
}
