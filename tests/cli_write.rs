//! `mapsync put`, `delete` and `apply` end to end against a real `mapsync
//! serve` on a real kernel: hex and typed round trips (checked in the
//! kernel with bpftool), and every refusal: one line on stderr, a non-zero
//! exit, and the map untouched.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{HexMap, Server, json_lines, kernel_hex, map_arg, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};
use serde_json::{Value, json};

fn success(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// The one line of a refused command.
fn refusal(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a refusal, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].trim_start_matches("error: ").to_owned()
}

/// Runs a refused command and checks the map's kernel content did not
/// change; returns the error line.
fn refused_untouched(server: &Server, pin: &std::path::Path, args: &[&str]) -> String {
    let before: HexMap = kernel_hex(pin);
    let line = refusal(&server.cli(args));
    assert_eq!(kernel_hex(pin), before, "{args:?} changed the map");
    line
}

#[test]
fn hex_put_and_delete_round_trip_and_every_refusal_leaves_the_map_untouched() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("cli-write");
    let flows = pin(&pins, "flows");
    let limits = pin(&pins, "limits");
    support::create_map(&flows, "hash", 4, 8, 2, "flows");
    support::create_map(&limits, "array", 4, 4, 2, "limits");
    let server = Server::start(
        &pins,
        &[map_arg("flows", &flows), map_arg("limits", &limits)],
    );

    let put = success(&server.cli(&["put", "flows", "01000000", "0102030405060708", "--json"]));
    assert_eq!(
        (put["op"].as_str(), put["map"].as_str()),
        (Some("put"), Some("flows"))
    );
    let revision = put["revision"].as_u64().expect("revision");
    let epoch = put["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(
        kernel_hex(&flows).get("01000000").map(String::as_str),
        Some("0102030405060708")
    );
    // read-your-writes: get answers at (at least) the put's revision
    let got = serde_json::from_slice::<Value>(
        &server.cli(&["get", "flows", "01000000", "--json"]).stdout,
    )
    .expect("get JSON");
    assert_eq!(got["value"], "0102030405060708");
    assert_eq!(got["mod_revision"].as_u64(), Some(revision));
    let text = server.cli(&["put", "flows", "02000000", "0000000000000002"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).starts_with("put at revision "),
        "{text:?}"
    );

    // flags, compare-and-swap and sizes: refused, nothing written
    let line = refused_untouched(
        &server,
        &flows,
        &["put", "flows", "01000000", "ffffffffffffffff", "--noexist"],
    );
    assert!(line.contains("(already exists)"), "{line}");
    let line = refused_untouched(
        &server,
        &flows,
        &["put", "flows", "03000000", "ffffffffffffffff", "--exist"],
    );
    assert!(line.contains("(not found)"), "{line}");
    let line = refused_untouched(
        &server,
        &flows,
        &["put", "flows", "03000000", "ffffffffffffffff"],
    );
    assert!(line.contains("(resource exhausted)"), "a full map: {line}");
    let stale = (revision - 1).to_string();
    let line = refused_untouched(
        &server,
        &flows,
        &[
            "put",
            "flows",
            "01000000",
            "ffffffffffffffff",
            "--expect-revision",
            &stale,
            "--epoch",
            &epoch,
        ],
    );
    assert!(
        line.contains(&format!("mod revision is {revision}")),
        "{line}"
    );
    let line = refused_untouched(
        &server,
        &flows,
        &["put", "flows", "0100zz00", "ffffffffffffffff"],
    );
    assert!(
        line.starts_with("key: `0100zz00` is not a hex byte string"),
        "{line}"
    );
    let line = refused_untouched(
        &server,
        &flows,
        &["put", "flows", "010000", "ffffffffffffffff"],
    );
    assert_eq!(line, "key: 3 bytes, but map `flows` has 4-byte keys");
    let line = refused_untouched(&server, &flows, &["put", "flows", "01000000", "ffff"]);
    assert_eq!(line, "value: 2 bytes, but map `flows` has 8-byte values");
    let line = refusal(&server.cli(&["put", "nope", "01000000", "ff"]));
    assert_eq!(line, "unknown map `nope` (mirrored: flows, limits)");
    let line = refused_untouched(
        &server,
        &limits,
        &["put", "limits", "00000000", "01000000", "--noexist"],
    );
    assert!(
        line.contains("(already exists)"),
        "array maps: always: {line}"
    );
    let line = refused_untouched(&server, &limits, &["put", "limits", "05000000", "01000000"]);
    assert!(
        line.contains("(invalid argument)"),
        "index past the end: {line}"
    );

    // compare-and-swap that holds, then delete with and without it
    let current = revision.to_string();
    let cas = success(&server.cli(&[
        "put",
        "flows",
        "01000000",
        "1111111111111111",
        "--expect-revision",
        &current,
        "--epoch",
        &epoch,
        "--json",
    ]));
    let cas_revision = cas["revision"].as_u64().expect("revision");
    assert!(cas_revision > revision);
    let line = refused_untouched(
        &server,
        &flows,
        &["delete", "flows", "01000000", "--expect-revision", &current],
    );
    assert!(
        line.contains(&format!("mod revision is {cas_revision}")),
        "{line}"
    );
    let deleted = success(&server.cli(&["delete", "flows", "01000000", "--json"]));
    assert!(deleted["revision"].as_u64().expect("revision") > cas_revision);
    assert!(!kernel_hex(&flows).contains_key("01000000"));
    let line = refused_untouched(&server, &flows, &["delete", "flows", "01000000"]);
    assert!(line.contains("(not found)"), "{line}");
    let array = success(&server.cli(&["put", "limits", "01000000", "07000000", "--json"]));
    assert!(array["revision"].as_u64().is_some());
    assert_eq!(
        kernel_hex(&limits).get("01000000").map(String::as_str),
        Some("07000000")
    );
}

#[test]
fn typed_put_and_delete_encode_through_the_map_s_btf() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("cli-write-typed");
    support::load_typed_maps(&pins);
    let flows = pin(&pins, "typed_flows");
    let counts = pin(&pins, "typed_cpu_counts");
    let server = Server::start(
        &pins,
        &[map_arg("flows", &flows), map_arg("counts", &counts)],
    );

    let key = r#"{"addr":16777343,"port":443,"proto":6}"#;
    let value = r#"{"packets":42,"name":"web","verdict":"TYPED_DROP"}"#;
    success(&server.cli(&["put", "flows", key, value, "--format", "json", "--json"]));
    let kernel = support::dump(&flows);
    assert_eq!(
        kernel.get(&support::typed_flow_key(0x0100_007f, 443, 6)),
        Some(&support::typed_flow_value(42, "web", 1)),
        "the kernel holds the bytes the struct describes"
    );
    let listed = json_lines(
        &server
            .cli(&["list", "flows", "--format", "json", "--json"])
            .stdout,
    );
    assert_eq!(
        listed,
        [
            json!({"key": serde_json::from_str::<Value>(key).expect("key"),
                "value": serde_json::from_str::<Value>(value).expect("value")})
        ]
    );

    let line = refused_untouched(
        &server,
        &flows,
        &[
            "put",
            "flows",
            r#"{"addr":1,"port":70000}"#,
            value,
            "--format",
            "json",
        ],
    );
    assert_eq!(line, "key.port: 70000 is out of range for u16");
    let line = refused_untouched(
        &server,
        &flows,
        &[
            "put",
            "flows",
            key,
            r#"{"packets":1,"colour":2}"#,
            "--format",
            "json",
        ],
    );
    assert_eq!(
        line,
        "value.colour: unknown field of struct typed_flow_value (its fields: packets, name, verdict)"
    );
    let line = refused_untouched(
        &server,
        &flows,
        &[
            "put",
            "flows",
            key,
            r#"{"verdict":"TYPED_DORP"}"#,
            "--format",
            "json",
        ],
    );
    assert!(
        line.starts_with("value.verdict: `TYPED_DORP` is not an enumerator"),
        "{line}"
    );
    let line = refused_untouched(
        &server,
        &flows,
        &["put", "flows", "{", value, "--format", "json"],
    );
    assert!(line.starts_with("key: `{` is not JSON"), "{line}");

    // a per-CPU counter: one value for every CPU
    success(&server.cli(&["put", "counts", "7", "5", "--format", "json", "--json"]));
    let listed = json_lines(
        &server
            .cli(&["list", "counts", "--format", "json", "--json"])
            .stdout,
    );
    let cpus = support::possible_cpus();
    let every: Vec<Value> = (0..cpus)
        .map(|cpu| json!({"cpu": cpu, "value": 5}))
        .collect();
    assert_eq!(listed, [json!({"key": 7, "values": every})]);

    success(&server.cli(&["delete", "flows", key, "--format", "json", "--json"]));
    assert!(support::dump(&flows).is_empty());
}

/// `mapsync apply --endpoint E ARGS` with `input` on stdin.
fn apply_stdin(server: &Server, args: &[&str], input: &str) -> Output {
    let mut child = mapsync()
        .arg("apply")
        .args(["--endpoint", &server.endpoint])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    common::wait_output(child, Duration::from_secs(60))
}

#[test]
fn apply_switches_a_whole_set_and_refuses_bad_files_whole() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("cli-apply");
    let rules = pins.join("rules");
    let plain = pin(&pins, "plain");
    support::create_map(&plain, "hash", 4, 4, 8, "plain");
    let create = format!("rules={}:hash:4:4:20000", rules.display());
    let server = Server::start_with(
        &pins,
        &[map_arg("plain", &plain)],
        &["--switch-create", &create],
    );
    let listed = |server: &Server| -> Vec<Value> {
        json_lines(&server.cli(&["list", "rules", "--json"]).stdout)
    };

    let set: String = (0..15_000u32)
        .map(|i| {
            format!(
                "{{\"key\":\"{}\",\"value\":\"01000000\"}}\n",
                support::hex(&i.to_ne_bytes())
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("set.jsonl");
    std::fs::write(&file, &set).expect("write the set");
    let output = server.cli(&["apply", "rules", file.to_str().expect("utf-8"), "--json"]);
    let applied = success(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("apply: sent 15000 of 15000 entries"),
        "progress on stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(applied["entries"].as_u64(), Some(15_000));
    let version = applied["version"].as_u64().expect("version");
    assert_eq!(listed(&server).len(), 15_000);

    // a merge from stdin: one put, one delete, at the live version
    let merge = format!(
        "{{\"key\":\"{}\",\"value\":\"02000000\"}}\n{{\"key\":\"{}\",\"value\":null}}\n",
        support::hex(&20_000u32.to_ne_bytes()),
        support::hex(&0u32.to_ne_bytes())
    );
    let live = version.to_string();
    let merged = success(&apply_stdin(
        &server,
        &["rules", "-", "--merge", "--expect-version", &live, "--json"],
        &merge,
    ));
    assert_eq!(merged["version"].as_u64(), Some(version + 1));
    assert_eq!(merged["entries"].as_u64(), Some(15_000));
    let now = listed(&server);
    assert!(
        now.iter()
            .any(|e| e["key"] == support::hex(&20_000u32.to_ne_bytes()))
    );
    assert!(
        !now.iter()
            .any(|e| e["key"] == support::hex(&0u32.to_ne_bytes()))
    );

    // refusals: the set stays what it was
    let before = listed(&server);
    let line = refusal(&apply_stdin(
        &server,
        &["rules", "-", "--expect-version", &live],
        "{\"key\":\"01000000\",\"value\":\"01000000\"}\n",
    ));
    assert!(
        line.contains(&format!("live version is {}", version + 1)),
        "{line}"
    );
    let bad = "{\"key\":\"01000000\",\"value\":\"01000000\"}\n{\"key\":\"0200\",\"value\":\"01000000\"}\n";
    let line = refusal(&apply_stdin(&server, &["rules", "-"], bad));
    assert_eq!(
        line,
        "line 2: key: 2 bytes, but map `rules` has 4-byte keys"
    );
    let line = refusal(&apply_stdin(
        &server,
        &["rules", "-"],
        "{\"key\":\"01000000\",\"value\":null}\n",
    ));
    assert!(
        line.starts_with("line 1: \"value\": null deletes, which only --merge allows"),
        "{line}"
    );
    let line = refusal(&apply_stdin(
        &server,
        &["plain", "-"],
        "{\"key\":\"01000000\",\"value\":\"01000000\"}\n",
    ));
    assert!(line.starts_with("map `plain` is not switchable"), "{line}");
    let line = refusal(&server.cli(&["apply", "rules", "/nonexistent/set.jsonl"]));
    assert!(
        line.starts_with("cannot read /nonexistent/set.jsonl"),
        "{line}"
    );
    assert_eq!(listed(&server), before);
}

#[test]
fn typed_apply_encodes_every_line_through_the_inner_map_s_btf() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("cli-apply-typed");
    support::load_typed_maps(&pins);
    let inner = pin(&pins, "typed_flows");
    let outer = pins.join("outer");
    let (inner_s, outer_s) = (
        inner.to_str().expect("utf-8"),
        outer.to_str().expect("utf-8"),
    );
    support::bpftool(&[
        "map",
        "create",
        outer_s,
        "type",
        "array_of_maps",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "1",
        "name",
        "outer",
        "inner_map",
        "pinned",
        inner_s,
    ])
    .expect("bpftool create outer");
    support::bpftool(&[
        "map", "update", "pinned", outer_s, "key", "0", "0", "0", "0", "value", "pinned", inner_s,
    ])
    .expect("bpftool set slot 0");
    let switch = format!("flows={outer_s}");
    let server = Server::start_with(&pins, &[], &["--switch", &switch]);

    let line = |addr: u32, port: u32, name: &str| {
        format!(
            "{{\"key\":{{\"addr\":{addr},\"port\":{port},\"proto\":6}},\"value\":{{\"packets\":{addr},\"name\":\"{name}\",\"verdict\":\"TYPED_DROP\"}}}}\n"
        )
    };
    let set = line(1, 80, "web") + &line(2, 443, "tls");
    let applied = success(&apply_stdin(
        &server,
        &["flows", "-", "--format", "json", "--json"],
        &set,
    ));
    assert_eq!(applied["entries"].as_u64(), Some(2));
    let listed = json_lines(
        &server
            .cli(&["list", "flows", "--format", "json", "--json"])
            .stdout,
    );
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|e| e["key"]["port"] == 443 && e["value"]["name"] == "tls")
    );

    let before = json_lines(&server.cli(&["list", "flows", "--json"]).stdout);
    let bad = line(3, 22, "ssh") + &line(4, 70_000, "big");
    let error = refusal(&apply_stdin(
        &server,
        &["flows", "-", "--format", "json"],
        &bad,
    ));
    assert_eq!(error, "line 2: key.port: 70000 is out of range for u16");
    assert_eq!(
        json_lines(&server.cli(&["list", "flows", "--json"]).stdout),
        before
    );
}
