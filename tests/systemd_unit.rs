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

/// The unit's ExecStart, with MAPSYNC_ARGS pointing at a config file as
/// README's install section shows, is a command line this build accepts:
/// `--print-config` shows the unit's socket over the file's `listen`.
#[test]
fn the_units_command_line_with_a_config_file_parses() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/systemd/mapsync.service"
    ))
    .expect("the unit file");
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mapsync.toml");
    std::fs::write(
        &config,
        "listen = \"unix:/elsewhere.sock\"\nmetrics_listen = \"127.0.0.1:9464\"\n\n[[map]]\nname = \"flows\"\npin = \"/sys/fs/bpf/flows\"\n",
    )
    .expect("write the config");
    let args = format!("--config {}", config.display());
    let words: Vec<String> = exec
        .split_whitespace()
        .map(|word| word.replace("$MAPSYNC_ARGS", &args))
        .flat_map(|word| {
            word.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(words[0], "/usr/local/bin/mapsync", "{exec}");
    let output = Command::new(env!("CARGO_BIN_EXE_mapsync"))
        .args(&words[1..])
        .arg("--print-config")
        .output()
        .expect("run mapsync");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("\nlisten = \"unix:/run/mapsync/mapsync.sock\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\nmetrics_listen = \"127.0.0.1:9464\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\nmap = [\"flows=/sys/fs/bpf/flows\"]\n"),
        "{printed}"
    );
}
