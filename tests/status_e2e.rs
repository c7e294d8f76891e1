//! `mapsync status` and `mapsync maps` against a real `serve` on a real
//! kernel: the counts after known writes by another process (bpftool).

mod common;

use std::time::{Duration, Instant};

use common::{Server, map_arg, pin};
use mapsync_test_support::{self as support, PinDir};
use serde_json::Value;

/// `mapsync status --json`, parsed.
fn status(server: &Server) -> Value {
    let output = server.cli_within(&["status", "--json"], Duration::from_secs(30));
    assert!(
        output.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

fn map<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {status}"))
}

#[test]
fn status_counts_writes_by_source_and_maps_lists_them() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("status-e2e");
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let flows = pin(&pins, "flows");
    let limits = pin(&pins, "limits");
    support::create_map(&flows, "hash", 4, 8, 100, "flows");
    support::create_map(&limits, "array", 4, 4, 4, "limits");
    support::update(&flows, &[9, 0, 0, 0], &[0; 8]).expect("seed");
    let server = Server::start_with(
        &pins,
        &[map_arg("flows", &flows), map_arg("limits", &limits)],
        &["--poll", "limits=30", "--metrics-listen", &metrics_addr],
    );
    let before = status(&server);
    assert_eq!(map(&before, "flows")["entries"], 1);
    for key in 1u8..=4 {
        support::update(&flows, &[key, 0, 0, 0], &[key; 8]).expect("put");
    }
    support::delete(&flows, &[9, 0, 0, 0]).expect("delete");
    // five writes by bpftool: five trace events
    let deadline = Instant::now() + Duration::from_secs(10);
    let now = loop {
        let now = status(&server);
        if map(&now, "flows")["events"]["trace"] == 5 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let f = map(&now, "flows");
    assert_eq!(f["events"]["trace"], 5, "{f}");
    assert_eq!(f["events"]["emit"], 0, "{f}");
    assert_eq!(f["events"]["api"], 0, "{f}");
    assert_eq!(f["entries"], 4);
    assert_eq!(f["max_entries"], 100);
    assert!((f["pressure"].as_f64().expect("pressure") - 0.04).abs() < 1e-9);
    assert_eq!(
        (f["key_size"].clone(), f["value_size"].clone()),
        (4.into(), 8.into())
    );
    assert_eq!(f["kind"], "hash");
    assert_eq!(f["btf"], false);
    assert_eq!(f["resyncs"], 0);
    assert_eq!(f["poll_interval_seconds"], 0.0);
    let sources: Vec<&str> = f["capture_sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(sources, ["emit", "trace", "reconcile"]);
    let instance = &now["instance"];
    assert_eq!(f["last_change_revision"], instance["revision"]);
    let l = map(&now, "limits");
    assert_eq!(l["poll_interval_seconds"], 30.0);
    assert_eq!(l["capture_sources"][2], "poll");
    assert_eq!(l["pressure"], 1.0);
    assert_eq!(l["last_change_revision"], 0);
    assert!(instance["ring_bytes"].as_u64().expect("ring") >= 4096);
    assert!(instance["records_read"].as_u64().expect("read") >= 5);
    assert_eq!(instance["records_lost"], 0);
    assert_eq!(instance["records_undecodable"], 0);
    assert!(instance["ingest_lag_samples"].as_u64().expect("samples") >= 5);
    let p50 = instance["ingest_lag_p50_seconds"].as_f64().expect("p50");
    let p99 = instance["ingest_lag_p99_seconds"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 5.0, "{p50} {p99}");
    assert_eq!(
        instance["change_log"]["newest"], instance["revision"],
        "{instance}"
    );
    assert_eq!(instance["change_log"]["events"], 5);
    assert!(instance["uptime_seconds"].as_f64().expect("uptime") > 0.0);
    assert_eq!(instance["watches"], 0);

    // the per-map metric families say what Status says
    let scraped = common::scrape_metrics(&metrics_addr).expect("metrics");
    let value = |name: &str| {
        *scraped
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {scraped:?}"))
    };
    assert_eq!(value(r#"mapsync_map_entries{map="flows"}"#), 4.0);
    assert_eq!(value(r#"mapsync_map_pressure{map="limits"}"#), 1.0);
    assert!((value(r#"mapsync_map_pressure{map="flows"}"#) - 0.04).abs() < 1e-9);
    assert_eq!(value(r#"mapsync_map_trace_events_total{map="flows"}"#), 5.0);
    assert_eq!(value(r#"mapsync_map_emit_events_total{map="flows"}"#), 0.0);
    assert_eq!(value(r#"mapsync_map_resyncs_total{map="flows"}"#), 0.0);
    assert_eq!(
        value(r#"mapsync_map_reconcile_repairs_total{map="limits"}"#),
        0.0
    );
    // one propagation sample per record read
    let records = value("mapsync_records_total");
    assert!(records >= 5.0);
    assert_eq!(
        value(r#"mapsync_propagation_seconds_count{path="kernel_to_mirror"}"#),
        records
    );
    assert_eq!(
        value(r#"mapsync_propagation_seconds_bucket{le="+Inf",path="kernel_to_mirror"}"#),
        records
    );
    assert_eq!(
        value(&format!(
            r#"mapsync_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    dashboard_names_only_scraped_metrics(&scraped);

    let table = server.cli_within(&["maps"], Duration::from_secs(30));
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("MAP"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("flows") && l.contains("4/100") && l.contains("0/5/0/0/0")),
        "{text}"
    );
    let human = server.cli_within(&["status"], Duration::from_secs(30));
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("records:      ") && text.contains("limits"),
        "{text}"
    );
}

/// Every metric a query of scripts/grafana/mapsync.json names is in a real
/// scrape (name before any label set; histogram series by their suffixes).
fn dashboard_names_only_scraped_metrics(scraped: &std::collections::BTreeMap<String, f64>) {
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/grafana/mapsync.json"
        ))
        .expect("the dashboard"),
    )
    .expect("valid JSON");
    let names: std::collections::BTreeSet<&str> = scraped
        .keys()
        .map(|key| key.split('{').next().unwrap_or(key))
        .collect();
    let mut checked = 0;
    for panel in board["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(start) = rest.find("mapsync_") {
                let tail = &rest[start..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let metric = &tail[..end];
                assert!(
                    names.contains(metric),
                    "the dashboard names {metric}, which the server does not export"
                );
                checked += 1;
                rest = &tail[end..];
            }
        }
    }
    assert!(checked >= 10, "{checked} metric references");
}
