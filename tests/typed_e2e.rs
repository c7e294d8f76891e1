//! Typed output end to end on a real kernel: maps with BTF (from
//! `typed.bpf.o`) listed, read and watched with `--format json`; per-CPU
//! values per CPU and summed; the errors of `--format json` without BTF and
//! `--per-cpu sum` on values that are not integers.

mod common;

use std::os::fd::AsFd;
use std::process::Output;
use std::time::Duration;

use common::{Server, json_lines, map_arg, pin};
use mapsync_kernel::MapSpec;
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir};
use serde_json::{Value, json};

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one-line error of a failed command.
fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

/// Runs `args` until its JSON lines satisfy `done` (the mirror follows the
/// kernel within milliseconds, not instantly).
fn eventually_lines(server: &Server, args: &[&str], done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = json_lines(stdout(&server.cli(args)).as_bytes());
        if done(&lines) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{args:?} never gave the expected output; last: {lines:?}");
}

#[test]
fn list_get_and_watch_print_typed_entries_decoded() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("typed-e2e");
    support::load_typed_maps(&pins);
    let flows = pin(&pins, "typed_flows");
    let web = support::typed_flow_key(0x0100_007f, 443, 6);
    support::update(&flows, &web, &support::typed_flow_value(42, "web", 1)).expect("seed");
    let server = Server::start(&pins, &[map_arg("flows", &flows)]);

    let listed = json_lines(
        stdout(&server.cli(&["list", "flows", "--format", "json", "--json"])).as_bytes(),
    );
    assert_eq!(
        listed,
        [json!({
            "key": {"addr": 0x0100_007f, "port": 443, "proto": 6},
            "value": {"packets": 42, "name": "web", "verdict": "TYPED_DROP"},
        })]
    );
    let text = stdout(&server.cli(&["list", "flows", "--format", "json"]));
    assert!(
        text.contains(r#"key {"addr":16777343,"port":443,"proto":6}  value {"packets":42,"name":"web","verdict":"TYPED_DROP"}"#),
        "{text}"
    );
    let hex = stdout(&server.cli(&["list", "flows", "--json"]));
    assert_eq!(
        json_lines(hex.as_bytes())[0]["key"],
        json!(support::hex(&web)),
        "hex stays the default"
    );

    let web_hex = support::hex(&web);
    let value = stdout(&server.cli(&["get", "flows", &web_hex, "--format", "json"]));
    assert_eq!(
        value.trim(),
        r#"{"packets":42,"name":"web","verdict":"TYPED_DROP"}"#
    );
    let got = json_lines(
        stdout(&server.cli(&["get", "flows", &web_hex, "--format", "json", "--json"])).as_bytes(),
    );
    assert_eq!(got[0]["key"], json!(web_hex));
    assert_eq!(got[0]["value"]["verdict"], json!("TYPED_DROP"));

    let (mut watch, lines) = server.spawn_cli(&["watch", "flows", "--format", "json", "--json"]);
    let initial: Value = serde_json::from_str(&lines.next(Duration::from_secs(10))).expect("JSON");
    assert_eq!(initial["op"], "put");
    assert_eq!(initial["key"]["port"], 443);
    assert_eq!(initial["value"]["name"], "web");
    let dns = support::typed_flow_key(0x0800_0808, 53, 17);
    support::update(&flows, &dns, &support::typed_flow_value(1, "dns", 2)).expect("put");
    let put: Value = serde_json::from_str(&lines.next(Duration::from_secs(5))).expect("JSON");
    assert_eq!(put["op"], "put");
    assert_eq!(put["map"], "flows");
    assert_eq!(
        put["key"],
        json!({"addr": 0x0800_0808, "port": 53, "proto": 17})
    );
    assert_eq!(
        put["value"],
        json!({"packets": 1, "name": "dns", "verdict": "TYPED_REDIRECT"})
    );
    support::delete(&flows, &dns).expect("delete");
    let delete: Value = serde_json::from_str(&lines.next(Duration::from_secs(5))).expect("JSON");
    assert_eq!(delete["op"], "delete");
    assert_eq!(delete["key"]["port"], 53);
    assert_eq!(delete["value"], Value::Null);
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn per_cpu_values_print_per_cpu_and_summed() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("typed-percpu");
    support::load_typed_maps(&pins);
    let counts = pin(&pins, "typed_cpu_counts");
    let plain = pin(&pins, "plain_cpu");
    support::create_map(&plain, "percpu_hash", 4, 4, 8, "plain_cpu");
    let server = Server::start(
        &pins,
        &[map_arg("counts", &counts), map_arg("plain", &plain)],
    );

    let cpus = support::possible_cpus() as u64;
    let typed = open::open(&MapSpec::pin(None, &counts)).expect("open counts");
    let value: Vec<u8> = (0..cpus)
        .flat_map(|cpu| (cpu * 10 + 1).to_ne_bytes())
        .collect();
    sys::update(typed.fd.as_fd(), &7u32.to_ne_bytes(), &value, 0).expect("per-CPU update");
    let untyped = open::open(&MapSpec::pin(None, &plain)).expect("open plain");
    let value: Vec<u8> = (0..cpus)
        .flat_map(|cpu| {
            ((cpu + 1) as u32)
                .to_ne_bytes()
                .into_iter()
                .chain([0xee; 4])
        })
        .collect();
    sys::update(untyped.fd.as_fd(), &1u32.to_ne_bytes(), &value, 0).expect("per-CPU update");

    let each = eventually_lines(
        &server,
        &["list", "counts", "--format", "json", "--json"],
        |l| l.len() == 1,
    );
    let expected: Vec<Value> = (0..cpus)
        .map(|cpu| json!({"cpu": cpu, "value": cpu * 10 + 1}))
        .collect();
    assert_eq!(each[0]["key"], json!(7));
    assert_eq!(each[0]["values"], Value::Array(expected));
    let sum = json_lines(
        stdout(&server.cli(&[
            "list",
            "counts",
            "--format",
            "json",
            "--per-cpu",
            "sum",
            "--json",
        ]))
        .as_bytes(),
    );
    let total: u64 = (0..cpus).map(|cpu| cpu * 10 + 1).sum();
    assert_eq!(sum[0]["value"], json!(total));
    let text = stdout(&server.cli(&["get", "counts", "07000000", "--format", "json"]));
    let per_cpu: Vec<String> = (0..cpus)
        .map(|cpu| format!("cpu{cpu} {}", cpu * 10 + 1))
        .collect();
    assert_eq!(text.trim(), per_cpu.join("  "));

    let each = eventually_lines(&server, &["list", "plain", "--json"], |l| l.len() == 1);
    let expected: Vec<Value> = (0..cpus)
        .map(|cpu| json!({"cpu": cpu, "value": support::hex(&((cpu + 1) as u32).to_ne_bytes())}))
        .collect();
    assert_eq!(
        each[0]["values"],
        Value::Array(expected),
        "hex, padding dropped"
    );
    let sum = stdout(&server.cli(&["get", "plain", "01000000", "--per-cpu", "sum"]));
    let total: u32 = (1..=cpus as u32).sum();
    assert_eq!(sum.trim(), support::hex(&total.to_ne_bytes()));

    let (mut watch, lines) = server.spawn_cli(&[
        "watch",
        "counts",
        "--format",
        "json",
        "--per-cpu",
        "sum",
        "--json",
    ]);
    let initial: Value = serde_json::from_str(&lines.next(Duration::from_secs(10))).expect("JSON");
    assert_eq!(
        initial["value"],
        json!((0..cpus).map(|cpu| cpu * 10 + 1).sum::<u64>())
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn format_json_without_btf_and_sum_of_non_integers_fail_with_clear_errors() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("typed-errors");
    support::load_typed_maps(&pins);
    let plain = pin(&pins, "plain");
    support::create_map(&plain, "hash", 4, 4, 8, "plain");
    support::update(&plain, &[1, 0, 0, 0], &[2, 0, 0, 0]).expect("seed");
    let wide = pin(&pins, "wide");
    support::create_map(&wide, "percpu_hash", 4, 12, 8, "wide");
    let pairs = pin(&pins, "typed_cpu_pairs");
    let server = Server::start(
        &pins,
        &[
            map_arg("plain", &plain),
            map_arg("wide", &wide),
            map_arg("pairs", &pairs),
        ],
    );
    let no_btf = "error: map `plain` has no BTF for its key and value, so `--format json` cannot \
                  decode it (maps created from a BPF object compiled with -g carry BTF; bpftool \
                  map create makes none): use `--format hex`";
    assert_eq!(
        failure(&server.cli(&["list", "plain", "--format", "json"])),
        no_btf
    );
    assert_eq!(
        failure(&server.cli(&["get", "plain", "01000000", "--format", "json"])),
        no_btf
    );
    assert_eq!(
        failure(&server.cli(&["watch", "--format", "json"])),
        no_btf,
        "every map"
    );
    assert_eq!(
        failure(&server.cli(&["list", "wide", "--per-cpu", "sum"])),
        "error: `--per-cpu sum` needs integer values, but map `wide` has 12-byte values: use `--per-cpu each`"
    );

    let typed = open::open(&MapSpec::pin(None, &pairs)).expect("open pairs");
    let cpus = support::possible_cpus() as u32;
    let value: Vec<u8> = (0..cpus)
        .flat_map(|cpu| [cpu.to_ne_bytes(), 9u32.to_ne_bytes()].concat())
        .collect();
    sys::update(typed.fd.as_fd(), &1u32.to_ne_bytes(), &value, 0).expect("per-CPU update");
    eventually_lines(&server, &["list", "pairs", "--json"], |l| l.len() == 1);
    assert_eq!(
        failure(&server.cli(&["list", "pairs", "--format", "json", "--per-cpu", "sum"])),
        "error: `--per-cpu sum` needs integer values, but map `pairs`'s values decode to \
         {\"first\":0,\"second\":9} (not an integer): use `--per-cpu each`"
    );
    let each = json_lines(
        stdout(&server.cli(&["list", "pairs", "--format", "json", "--json"])).as_bytes(),
    );
    assert_eq!(
        each[0]["values"][0]["value"],
        json!({"first": 0, "second": 9})
    );
}
