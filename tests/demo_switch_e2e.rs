//! `mapsync demo` shows the atomic switch: it applies new blocklists to a
//! switchable map while packets go through an XDP program, and reports per
//! version that every verdict matched that version's set.

use std::process::Command;

use mapsync_test_support as support;

#[test]
fn the_demo_applies_blocklists_and_every_verdict_matches_its_version() {
    if !support::require_kernel() {
        return;
    }
    // one apply every 3 s: 7 s make two switches
    let output = Command::new(env!("CARGO_BIN_EXE_mapsync"))
        .args([
            "demo",
            "--duration",
            "7",
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
        stdout.contains("apply   api     blocklist version 2 = {192.0.2.2}"),
        "shows the apply: {stdout}"
    );
    let versions: Vec<&str> = stdout
        .lines()
        .filter(|line| line.trim_start().starts_with("version "))
        .collect();
    assert!(versions.len() >= 2, "one line per version: {stdout}");
    assert!(
        versions
            .iter()
            .all(|line| line.ends_with("every verdict matches this version's set")),
        "{stdout}"
    );
    // version 2 blocks 192.0.2.2, one of the four sources the demo rotates
    let v2 = versions
        .iter()
        .find(|line| line.contains("version   2"))
        .expect("version 2 saw packets");
    assert!(
        !v2.contains(" 0 dropped"),
        "version 2 dropped packets: {v2}"
    );
}
