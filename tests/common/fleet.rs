//! The `mapsync fleet ...` command and waiting on a kernel map, for the
//! fleet end-to-end tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::mapsync;

/// `mapsync fleet --etcd ENDPOINT --prefix PREFIX ARGS...`: whether it
/// succeeded, its stdout and its stderr.
pub fn fleet_cli(endpoint: &str, prefix: &str, args: &[&str]) -> (bool, String, String) {
    let out = mapsync()
        .args(["fleet", "--etcd", endpoint, "--prefix", prefix])
        .args(args)
        .output()
        .expect("run mapsync fleet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`fleet_cli`], which must succeed: its stdout.
pub fn fleet_ok(endpoint: &str, prefix: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = fleet_cli(endpoint, prefix, args);
    assert!(ok, "mapsync fleet {args:?}: {stderr}");
    stdout
}

/// Waits (up to 20 s) until the kernel map pinned at `pin` holds exactly
/// `want`.
pub fn wait_dump(pin: &Path, want: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while &mapsync_test_support::dump(pin) != want {
        assert!(
            Instant::now() < deadline,
            "the kernel map never matched etcd: {:?}",
            mapsync_test_support::dump(pin)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
