//! `serve --config FILE` as a user runs it: a real serve on a real kernel
//! configured by a file (flags over it), and the one-line refusals.

mod common;

use std::time::{Duration, Instant};

use common::{Server, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};
use serde_json::Value;

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("mapsync.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn serve_runs_from_a_config_file_with_flags_over_it() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("config-e2e");
    let flows = pin(&pins, "flows");
    let limits = pin(&pins, "limits");
    support::create_map(&flows, "hash", 4, 8, 100, "flows");
    support::create_map(&limits, "array", 4, 4, 4, "limits");
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        &dir,
        &format!(
            r#"# the harness gives --listen and --pin-dir on the command line: they win
listen = "unix:/nonexistent/never.sock"
metrics_listen = "{metrics_addr}"
ringbuf_bytes = 65536

[[map]]
name = "flows"
pin = "{}"

[[map]]
name = "limits"
pin = "{}"
poll = 30
"#,
            flows.display(),
            limits.display()
        ),
    );
    let server = Server::start_with(&pins, &[], &["--config", &config]);
    support::update(&flows, &[1, 0, 0, 0], &[7; 8]).expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let output = server.cli_within(&["status", "--json"], Duration::from_secs(30));
        assert!(output.status.success(), "{output:?}");
        let status: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let flows_entries = status["maps"]
            .as_array()
            .expect("maps")
            .iter()
            .find(|m| m["name"] == "flows")
            .map(|m| m["entries"].clone());
        if flows_entries == Some(1.into()) || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let maps = status["maps"].as_array().expect("maps");
    let names: Vec<&str> = maps.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["flows", "limits"], "{status}");
    assert_eq!(maps[0]["entries"], 1, "{status}");
    assert_eq!(maps[1]["poll_interval_seconds"], 30.0, "{status}");
    assert_eq!(status["instance"]["ring_bytes"], 65536, "{status}");
    // the metrics endpoint comes from the file
    let metrics = common::scrape_metrics(&metrics_addr).expect("metrics answer");
    assert!(!metrics.is_empty());
}

#[test]
fn a_bad_config_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(&dir, "listen = \"127.0.0.1:0\"\nlisten_adress = \"x\"\n");
    let output = mapsync()
        .args(["serve", "--config", &config])
        .output()
        .expect("run mapsync");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "error: config file {config}: line 2: `listen_adress`: unknown key (keys are serve's flags, e.g. `metrics_listen` for --metrics-listen)\n"
        )
    );
    let output = mapsync()
        .args(["serve", "--config", "/nonexistent/mapsync.toml"])
        .output()
        .expect("run mapsync");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: cannot read config file /nonexistent/mapsync.toml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn print_config_shows_the_file_under_the_flags_and_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        &dir,
        "listen = \"127.0.0.1:7000\"\nlog_events = 50\n[[map]]\npin = \"/sys/fs/bpf/x\"\n",
    );
    let output = mapsync()
        .args([
            "serve",
            "--config",
            &config,
            "--log-events",
            "60",
            "--print-config",
        ])
        .output()
        .expect("run mapsync");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        printed.contains("\nlisten = \"127.0.0.1:7000\"\n"),
        "{printed}"
    );
    assert!(printed.contains("\nlog_events = 60\n"), "{printed}");
    assert!(
        printed.contains("\nmap = [\"/sys/fs/bpf/x\"]\n"),
        "{printed}"
    );
    // and it is a config file serve accepts
    let again = write_config(&dir, &printed);
    let output = mapsync()
        .args(["serve", "--config", &again, "--print-config"])
        .output()
        .expect("run mapsync");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8(output.stdout).expect("UTF-8"), printed);
    // the environment wins over the file, the command line over both
    let output = mapsync()
        .args(["serve", "--config", &config, "--print-config"])
        .env("MAPSYNC_LISTEN", "unix:/from/env.sock")
        .output()
        .expect("run mapsync");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        printed.contains("\nlisten = \"unix:/from/env.sock\"\n"),
        "{printed}"
    );
    let output = mapsync()
        .args([
            "serve",
            "--config",
            &config,
            "--listen",
            "unix:/flag.sock",
            "--print-config",
        ])
        .env("MAPSYNC_LISTEN", "unix:/from/env.sock")
        .output()
        .expect("run mapsync");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        printed.contains("\nlisten = \"unix:/flag.sock\"\n"),
        "{printed}"
    );
}

#[test]
fn a_flag_the_file_needs_another_for_is_named_with_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(&dir, "tls_cert = \"/etc/mapsync/cert.pem\"\n");
    let output = mapsync()
        .args(["serve", "--config", &config])
        .output()
        .expect("run mapsync");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--tls-key")
            && stderr.contains(&format!("(flags and config file {config})")),
        "{stderr}"
    );
}

#[cfg(not(feature = "otlp"))]
#[test]
fn otlp_without_the_feature_is_refused_in_one_line() {
    let output = mapsync()
        .args([
            "serve",
            "--map",
            "/sys/fs/bpf/none",
            "--otlp-endpoint",
            "http://127.0.0.1:4317",
        ])
        .output()
        .expect("run mapsync");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: --otlp-endpoint http://127.0.0.1:4317: this mapsync was built without OTLP (build with `--features otlp`)\n"
    );
}
