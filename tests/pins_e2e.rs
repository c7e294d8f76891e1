//! `mapsync serve` and its pin directory end to end: one instance per pin
//! directory, a pin directory off bpffs, one map under two names, and a pin
//! replaced under a running server.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{HexMap, Server, kernel_hex, map_arg, mapsync, pin, wait_output};
use mapsync_test_support::{self as support, PinDir};

/// Runs `mapsync serve ARGS` that is expected to refuse to start, on its own
/// socket; its output once it has exited (panics after 20 s).
fn refused_serve(args: &[&str]) -> Output {
    let socket_dir = tempfile::tempdir().expect("temp dir");
    let endpoint = format!("unix:{}", socket_dir.path().join("second.sock").display());
    let child = mapsync()
        .args(["serve", "--listen", &endpoint])
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mapsync serve");
    let output = wait_output(child, Duration::from_secs(20));
    assert!(
        !output.status.success(),
        "serve should have refused to start: {output:?}"
    );
    output
}

/// The one error line of a refused start (and that there is only one).
fn the_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_owned()
}

/// `mapsync list MAP --json` against `server`, which must succeed.
fn listed(server: &Server, map: &str) -> HexMap {
    common::listed(server, map, Duration::from_secs(30)).expect("`mapsync list` succeeds")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn a_second_serve_on_one_pin_dir_is_refused_naming_the_first_which_keeps_serving() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-lock");
    let hash = pin(&pins, "locked");
    support::create_map(&hash, "hash", 4, 8, 16, "locked");
    support::update(&hash, &[1, 0, 0, 0], &[1; 8]).expect("seed");
    let mut first = Server::start(&pins, &[map_arg("locked", &hash)]);
    let pin_dir = pins.join("capture");

    let second = refused_serve(&[
        "--pin-dir",
        path_str(&pin_dir),
        "--map",
        &map_arg("locked", &hash),
    ]);
    let line = the_error_line(&second);
    assert!(
        line.contains(&format!("pid {}", first.pid())) && line.contains(path_str(&pin_dir)),
        "names the first's pid and the pin dir: {line}"
    );

    // the first is unharmed
    assert_eq!(listed(&first, "locked"), kernel_hex(&hash));
    support::update(&hash, &[2, 0, 0, 0], &[2; 8]).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&first, "locked").len() < 2 {
        assert!(Instant::now() < deadline, "the first stopped following");
        std::thread::sleep(Duration::from_millis(50));
    }

    // the lock dies with its process: kill -9, and a new serve starts
    first.kill9();
    first.restart();
    assert_eq!(listed(&first, "locked"), kernel_hex(&hash));
}

#[test]
fn a_pin_dir_off_bpffs_is_one_line_that_says_bpffs_and_how_to_mount_it() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-tmpfs");
    let hash = pin(&pins, "elsewhere");
    support::create_map(&hash, "hash", 4, 8, 16, "elsewhere");
    let on_tmpfs = tempfile::tempdir_in("/dev/shm").expect("a directory on tmpfs");
    let pin_dir = on_tmpfs.path().join("capture");

    let output = refused_serve(&[
        "--pin-dir",
        path_str(&pin_dir),
        "--map",
        &map_arg("elsewhere", &hash),
    ]);
    let line = the_error_line(&output);
    assert!(
        line.contains("not on bpffs")
            && line.contains("tmpfs")
            && line.contains("mount -t bpf bpf /sys/fs/bpf"),
        "{line}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("pinning failed"), "{stderr}");
    assert!(!pin_dir.exists(), "nothing created off bpffs");
}

#[test]
fn one_map_under_two_names_is_refused_naming_both_and_the_id() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-twice");
    let hash = pin(&pins, "twice");
    support::create_map(&hash, "hash", 4, 8, 16, "twice");
    let shown = support::bpftool(&["-j", "map", "show", "pinned", path_str(&hash)])
        .expect("bpftool map show");
    let id = serde_json::from_str::<serde_json::Value>(&shown).expect("json")["id"]
        .as_u64()
        .expect("an id");
    let pin_dir = pins.join("capture");

    for second in [
        vec!["--map".to_owned(), map_arg("b", &hash)],
        vec!["--map-id".to_owned(), format!("b={id}")],
    ] {
        let mut args = vec!["--pin-dir", path_str(&pin_dir)];
        let first = map_arg("a", &hash);
        args.extend(["--map", &first]);
        args.extend(second.iter().map(String::as_str));
        let line = the_error_line(&refused_serve(&args));
        assert!(
            line.contains(&format!("map id {id}")) && line.contains("`a`") && line.contains("`b`"),
            "{line}"
        );
    }
}

#[test]
fn a_replaced_pin_is_followed_by_a_running_serve_within_a_reconcile_tick() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-replaced");
    let hash = pin(&pins, "replaced");
    support::create_map(&hash, "hash", 4, 8, 16, "replaced");
    support::update(&hash, &[1, 0, 0, 0], &[1; 8]).expect("seed A");
    let server = Server::start_with(
        &pins,
        &[map_arg("replaced", &hash)],
        &["--reconcile-interval", "0.5"],
    );
    assert_eq!(listed(&server, "replaced"), kernel_hex(&hash));

    std::fs::remove_file(&hash).expect("rm the pin");
    support::create_map(&hash, "hash", 4, 8, 32, "replaced");
    support::update(&hash, &[2, 0, 0, 0], &[2; 8]).expect("write B");
    let expected = kernel_hex(&hash);
    let replaced = Instant::now();
    while listed(&server, "replaced") != expected {
        assert!(
            replaced.elapsed() < Duration::from_secs(10),
            "the mirror still follows the old map"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("replaced pin listed after {:?}", replaced.elapsed());
    // and B is now captured live
    support::update(&hash, &[3, 0, 0, 0], &[3; 8]).expect("write B again");
    let expected = kernel_hex(&hash);
    while listed(&server, "replaced") != expected {
        assert!(
            replaced.elapsed() < Duration::from_secs(20),
            "B's write not mirrored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let switches = server
        .log()
        .iter()
        .filter(|line| line.contains("the pin names another map now"))
        .count();
    assert_eq!(switches, 1, "one log line for the switch");
}
