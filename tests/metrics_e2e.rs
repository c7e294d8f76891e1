//! The metrics endpoint of a real `serve` on a real kernel: exactly the
//! metrics README's table documents, and the propagation histograms count
//! the events of known writes (kernel -> mirror and mirror -> watch).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Server, map_arg, metric, pin};
use mapsync_test_support::{self as support, PinDir};

/// The raw OpenMetrics text of `http://ADDR/metrics`.
fn scrape_text(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The metric names a scrape exposes (counters with `_total`, infos with
/// `_info`, as their samples are named), with their types.
fn exposed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
            let name = match kind {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_owned(),
            };
            (name, kind.to_owned())
        })
        .collect()
}

/// README's metrics table: name -> type.
fn documented() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `mapsync_"))
        .map(|rest| {
            let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
            let name = format!("mapsync_{}", cells[0].trim_end_matches('`'));
            (name, cells[1].to_owned())
        })
        .collect()
}

#[test]
fn the_scrape_is_the_documented_set_and_histograms_count_the_events() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("metrics-e2e");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 100, "flows");
    support::update(&flows, &[9, 0, 0, 0], &[9; 8]).expect("seed");
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start_with(
        &pins,
        &[map_arg("flows", &flows)],
        &["--metrics-listen", &metrics_addr],
    );

    let table = documented();
    assert!(table.len() >= 30, "{table:?}");
    let scraped = exposed(&scrape_text(&metrics_addr));
    let missing: Vec<_> = table.keys().filter(|n| !scraped.contains_key(*n)).collect();
    let undocumented: Vec<_> = scraped.keys().filter(|n| !table.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );
    assert!(
        undocumented.is_empty(),
        "exported but not in README's table: {undocumented:?}"
    );
    for (name, kind) in &table {
        assert_eq!(&scraped[name], kind, "{name}: type");
    }
    let names: BTreeSet<&String> = table.keys().collect();
    for name in names {
        let suffix_ok = ["_total", "_seconds", "_bytes", "_info"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        // counts of things and ratios carry no unit suffix
        let unitless = [
            "subscribers",
            "events",
            "streams",
            "watches",
            "messages",
            "entries",
            "pressure",
        ]
        .iter()
        .any(|word| name.ends_with(word));
        assert!(suffix_ok || unitless, "{name}: no unit suffix");
    }

    // one live watch, then five writes by another process
    let (watch, lines) = server.spawn_cli(&["watch", "flows", "--json"]);
    let _watch = common::ChildGuard(watch);
    lines.next(Duration::from_secs(10)); // the seeded entry, as initial state
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &common::scrape_metrics(&metrics_addr).expect("scrape"),
        "mapsync_watches",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "the watch never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    for key in 1u8..=5 {
        support::update(&flows, &[key, 0, 0, 0], &[key; 8]).expect("write");
    }
    for _ in 0..5 {
        lines.next(Duration::from_secs(10));
    }
    // an event is counted right after it is queued, so the client may
    // print it a moment before: wait for the count
    let deadline = Instant::now() + Duration::from_secs(10);
    let values = loop {
        let values = common::scrape_metrics(&metrics_addr).expect("scrape");
        let sent = values
            .get(r#"mapsync_propagation_seconds_count{path="mirror_to_watch"}"#)
            .copied()
            .unwrap_or(0.0);
        if sent >= 5.0 || Instant::now() > deadline {
            break values;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let value = |name: &str| {
        *values
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {values:?}"))
    };
    assert_eq!(value(r#"mapsync_map_trace_events_total{map="flows"}"#), 5.0);
    let records = value("mapsync_records_total");
    assert_eq!(records, 5.0, "five writes, five ring records");
    assert_eq!(
        value(r#"mapsync_propagation_seconds_count{path="kernel_to_mirror"}"#),
        records
    );
    assert_eq!(
        value(r#"mapsync_propagation_seconds_bucket{le="+Inf",path="kernel_to_mirror"}"#),
        records
    );
    // one live event to one watch per write (the initial state not counted)
    assert_eq!(
        value(r#"mapsync_propagation_seconds_count{path="mirror_to_watch"}"#),
        5.0
    );
    let sum = value(r#"mapsync_propagation_seconds_sum{path="mirror_to_watch"}"#);
    assert!(sum > 0.0 && sum < 25.0, "{sum}");
    let lag = value("mapsync_lag_seconds");
    assert!(lag > 0.0 && lag < 5.0, "{lag}");
    assert_eq!(
        value(&format!(
            r#"mapsync_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
}
