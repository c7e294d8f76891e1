//! `mapsync bench strategies --quick`: every strategy's row with sane
//! figures, the capability cells that are measured, and an SVG chart that
//! parses with one latency series per strategy. Real kernel (root); under
//! `CI=true` a machine without it fails this test.

use std::collections::HashSet;
use std::process::Command;

use serde_json::Value;

const STRATEGIES: [&str; 6] = [
    "emit",
    "trace",
    "switch",
    "poll 10ms",
    "poll 100ms",
    "poll 1s",
];
/// The ingest task's tick, on which polls are served.
const TICK_MS: f64 = 100.0;

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|row| row["strategy"] == name)
        .unwrap_or_else(|| panic!("no row {name} in the JSON"))
}

fn seen(row: &Value, cell: &str) -> (bool, bool) {
    let cell = &row["capabilities"][cell];
    (
        cell["seen"].as_bool().expect("seen"),
        cell["measured"].as_bool().expect("measured"),
    )
}

#[test]
fn quick_run_reports_every_strategy_with_a_chart() {
    if !mapsync_test_support::require_kernel() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_mapsync"))
        .args(["bench", "strategies", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("run mapsync");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );

    // the table: one figures line and one matrix line per strategy
    for name in STRATEGIES {
        let lines = stdout
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .count();
        assert!(
            lines >= 2,
            "strategy {name} missing from the table:\n{stdout}"
        );
    }

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("strategies.json")).expect("the JSON report"),
    )
    .expect("the JSON report parses");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), STRATEGIES.len());
    for name in STRATEGIES {
        let row = row(rows, name);
        let figure = |field: &str| {
            row[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {field}"))
        };
        assert_eq!(row["lost"], 0, "{name} lost writes: {row}");
        assert!(figure("throughput_per_s") > 0.0, "{name}: {row}");
        assert!(
            figure("p50_us") > 0.0 && figure("p50_us") <= figure("p99_us"),
            "{name}: {row}"
        );
        assert!(figure("cpu_process_s_per_million") > 0.0, "{name}: {row}");
        if let Some(poll_ms) = row["poll_ms"].as_f64() {
            // a poll comes every interval, but never sooner than a tick
            let period_ms = poll_ms.max(TICK_MS);
            let p50_ms = figure("p50_us") / 1e3;
            assert!(
                p50_ms <= 3.0 * period_ms + 200.0 && p50_ms >= 0.3 * poll_ms,
                "{name}: p50 {p50_ms} ms is not within its interval ({period_ms} ms)"
            );
        }
    }

    // the matrix, where measured
    let (trace_other, measured) = seen(row(rows, "trace"), "other_process");
    assert!(trace_other && measured, "the trace sees bpftool's write");
    assert_eq!(seen(row(rows, "emit"), "other_process"), (false, true));
    for name in ["emit", "trace"] {
        assert_eq!(seen(row(rows, name), "in_place"), (false, true), "{name}");
        assert_eq!(
            seen(row(rows, name), "lru_eviction"),
            (false, true),
            "{name}"
        );
        assert_eq!(seen(row(rows, name), "atomic_set"), (false, true), "{name}");
        assert_eq!(seen(row(rows, name), "every_write"), (true, true), "{name}");
    }
    assert_eq!(seen(row(rows, "switch"), "atomic_set"), (true, true));
    assert_eq!(seen(row(rows, "switch"), "every_write"), (true, true));
    for name in ["poll 10ms", "poll 100ms", "poll 1s"] {
        let row = row(rows, name);
        assert_eq!(seen(row, "in_place"), (true, true), "{name}");
        assert_eq!(seen(row, "lru_eviction"), (true, true), "{name}");
        // two writes within one interval: the poll sees only the last
        assert_eq!(seen(row, "every_write"), (false, true), "{name}");
    }

    // the chart: valid XML, one latency line per strategy, every name shown
    let svg = std::fs::read_to_string(out.path().join("strategies.svg")).expect("the SVG");
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let series: HashSet<&str> = doc
        .descendants()
        .filter(|node| node.has_tag_name("polyline") && node.attribute("stroke-width") == Some("2"))
        .filter_map(|node| node.attribute("stroke"))
        .collect();
    assert_eq!(
        series.len(),
        STRATEGIES.len(),
        "one coloured series per strategy"
    );
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|node| node.has_tag_name("text"))
        .filter_map(|node| node.text())
        .map(str::trim)
        .collect();
    for name in STRATEGIES {
        assert!(
            texts.iter().filter(|text| **text == name).count() >= 2,
            "{name} is named in the legend and under its bar"
        );
    }
}

#[test]
fn an_out_directory_that_cannot_be_made_is_one_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_mapsync"))
        .args([
            "bench",
            "strategies",
            "--quick",
            "--out",
            "/proc/mapsync-no/such",
        ])
        .output()
        .expect("run mapsync");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot create --out /proc/mapsync-no/such"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
