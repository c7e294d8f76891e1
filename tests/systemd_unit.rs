//! The systemd unit in scripts/systemd: `systemd-analyze verify` accepts it
//! without a single complaint (an unknown or misspelt directive is only a
//! warning to systemd, so any output fails the test), with ExecStart pointed
//! at the binary this build made. Skipped where systemd-analyze is absent.

use std::process::Command;

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/systemd/mapsync.service"
    ))
    .expect("the unit file");
    assert!(
        unit.contains("RuntimeDirectory=mapsync") && unit.contains("RuntimeDirectoryMode=0750")
    );
    for capability in [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
        "CAP_NET_ADMIN",
    ] {
        assert!(
            unit.lines()
                .any(|l| l.starts_with("CapabilityBoundingSet=") && l.contains(capability)),
            "{capability} in the bounding set"
        );
    }
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: the unit is not verified here");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mapsync.service");
    let unit = unit.replace("/usr/local/bin/mapsync", env!("CARGO_BIN_EXE_mapsync"));
    std::fs::write(&path, unit).expect("write the unit");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{complaints}");
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze: {complaints}"
    );
}
