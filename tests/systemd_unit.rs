//! The systemd unit in scripts/systemd: `systemd-analyze verify` accepts it
//! without a single complaint (an unknown or misspelt directive is only a
//! warning to systemd, so any output fails the test), with ExecStart pointed
//! at the binary this build made (skipped where systemd-analyze is absent);
//! and its command runs with only the capabilities the unit leaves it.

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

/// The capabilities the unit leaves `serve` (CapabilityBoundingSet, also
/// ambient) are enough to run it: the unit's ExecStart, run as systemd would
/// run it as far as this VM allows (PID 1 is not systemd here, so the unit
/// itself cannot be started): root with every capability outside the
/// unit's bounding set dropped (`setpriv`), no new privileges, the unit's
/// umask, and its socket in a private runtime directory. It loads the
/// capture programs, mirrors a pinned map, answers `list`, and follows a
/// write. Needs root and the kernel (fails, not skips, under CI=true).
#[test]
fn the_units_command_runs_with_only_the_units_capabilities() {
    use std::time::{Duration, Instant};

    use mapsync_test_support::{self as support, PinDir};

    if !support::require_kernel() {
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/systemd/mapsync.service"
    ))
    .expect("the unit file");
    let directive = |name: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("a {name} line"))
            .to_owned()
    };
    // CAP_BPF CAP_PERFMON ... -> -all,+bpf,+perfmon,...
    let bounding: String = std::iter::once("-all".to_owned())
        .chain(
            directive("CapabilityBoundingSet")
                .split_whitespace()
                .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let umask = directive("UMask");

    let pins = PinDir::new("unit-caps");
    let flows = pins.join("flows");
    support::create_map(&flows, "hash", 4, 8, 16, "flows");
    let runtime = tempfile::tempdir().expect("runtime directory");
    let socket = runtime.path().join("mapsync.sock");
    let args = format!(
        "--pin-dir {} --map flows={}",
        pins.join("capture").display(),
        flows.display()
    );
    let exec: Vec<String> = directive("ExecStart")
        .replace("/usr/local/bin/mapsync", env!("CARGO_BIN_EXE_mapsync"))
        .replace(
            "unix:/run/mapsync/mapsync.sock",
            &format!("unix:{}", socket.display()),
        )
        .replace("$MAPSYNC_ARGS", &args)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {umask} && exec setpriv --no-new-privs --inh-caps=-all --bounding-set={bounding} -- \"$@\""
        ))
        .arg("sh")
        .args(&exec)
        .spawn()
        .expect("run the unit's command under setpriv");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let endpoint = format!("unix:{}", socket.display());
    let list = || {
        Command::new(env!("CARGO_BIN_EXE_mapsync"))
            .args(["list", "--endpoint", &endpoint, "flows", "--json"])
            .output()
            .expect("run list")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("serve under the unit's capabilities exited: {status}");
        }
        if list().status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let child = Kill(child);
    // the capabilities in force are the unit's, not root's full set
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).expect("serve's status");
    let bound = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    let bound = u64::from_str_radix(bound.trim(), 16).expect("hex");
    const CAP_SYS_MODULE: u32 = 16;
    assert_eq!(bound & (1 << CAP_SYS_MODULE), 0, "CAP_SYS_MODULE dropped");
    // the unit's umask gave the socket no access for others
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "socket mode {mode:o}");
    // a write by another process reaches the mirror (the trace programs are attached)
    support::update(&flows, &[1, 0, 0, 0], &[9; 8]).expect("bpftool update");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = list();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("0909090909090909") {
            break;
        }
        assert!(Instant::now() < deadline, "the write never showed: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child);
}
