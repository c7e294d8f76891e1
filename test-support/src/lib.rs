//! Helpers for tests that load real BPF programs and maps.
//!
//! Kernel tests call [`require_kernel`] first: outside CI, a machine that
//! cannot run them (not root, no bpffs) skips them with a loud message; with
//! `CI=true` the same condition fails the test.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

mod batch;
mod mirror;
pub mod ring;

pub use batch::Batch;
pub use mirror::{mirror, wait_until};

/// Checks the test can use the kernel's BPF facilities. Returns `false`
/// (after printing why) when it cannot and `CI` is not set; panics when
/// `CI` is set.
pub fn require_kernel() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root");
    }
    if !is_bpffs(Path::new("/sys/fs/bpf")) {
        missing.push("bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)");
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        missing.push("bpftool (apt-get install bpftool)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("kernel test cannot run here: needs {}", missing.join(", "));
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{why} (CI is set, so this is a failure)");
    }
    eprintln!("\n!!! NOT RUN: {why} !!!\n");
    false
}

/// CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`): on a
/// shared machine, wall time is also the other tenants' time.
pub fn thread_cpu() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now);
    }
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn is_bpffs(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split_whitespace();
            let _dev = fields.next();
            fields.next() == Some(path.to_str().unwrap_or_default()) && fields.next() == Some("bpf")
        })
    })
}

/// A fresh directory under `/sys/fs/bpf`, removed with everything pinned
/// in it when dropped.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Creates `/sys/fs/bpf/mapsync-test-<pid>-<n>-<label>`.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/mapsync-test-{}-{n}-{label}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create a directory in bpffs");
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs bpftool with `args`; returns its stdout, or an error with its stderr.
pub fn bpftool(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("bpftool")
        .args(args)
        .output()
        .context("running bpftool")?;
    if !output.status.success() {
        bail!(
            "bpftool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Creates and pins a map with bpftool.
pub fn create_map(
    pin: &Path,
    kind: &str,
    key_size: u32,
    value_size: u32,
    entries: u32,
    name: &str,
) {
    bpftool(&[
        "map",
        "create",
        pin.to_str().expect("utf-8 path"),
        "type",
        kind,
        "key",
        &key_size.to_string(),
        "value",
        &value_size.to_string(),
        "entries",
        &entries.to_string(),
        "name",
        name,
    ])
    .expect("bpftool map create");
}

fn hex_args(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bpftool map update pinned PIN key hex .. value hex ..`.
pub fn update(pin: &Path, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
    let mut args = vec![
        "map".to_owned(),
        "update".into(),
        "pinned".into(),
        pin.display().to_string(),
        "key".into(),
        "hex".into(),
    ];
    args.extend(hex_args(key));
    args.extend(["value".into(), "hex".into()]);
    args.extend(hex_args(value));
    bpftool(&args.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
}

/// `bpftool map delete pinned PIN key hex ..`.
pub fn delete(pin: &Path, key: &[u8]) -> anyhow::Result<()> {
    let mut args = vec![
        "map".to_owned(),
        "delete".into(),
        "pinned".into(),
        pin.display().to_string(),
        "key".into(),
        "hex".into(),
    ];
    args.extend(hex_args(key));
    bpftool(&args.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
}

/// The map's content as `bpftool -j map dump` shows it: key bytes -> value
/// bytes (per-CPU values: the CPUs' values concatenated, each padded to 8).
pub fn dump(pin: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let text = bpftool(&[
        "-j",
        "map",
        "dump",
        "pinned",
        pin.to_str().expect("utf-8 path"),
    ])
    .expect("bpftool map dump");
    let entries: serde_json::Value = serde_json::from_str(&text).expect("bpftool JSON");
    let bytes = |value: &serde_json::Value| -> Vec<u8> {
        value
            .as_array()
            .expect("byte array")
            .iter()
            .map(|b| {
                u8::from_str_radix(b.as_str().expect("hex string").trim_start_matches("0x"), 16)
                    .expect("hex byte")
            })
            .collect()
    };
    entries
        .as_array()
        .expect("array of entries")
        .iter()
        .map(|entry| {
            let key = bytes(&entry["key"]);
            let value = if let Some(values) = entry.get("values") {
                values
                    .as_array()
                    .expect("per-CPU values")
                    .iter()
                    .flat_map(|slot| {
                        let mut v = bytes(&slot["value"]);
                        v.resize(v.len().div_ceil(8) * 8, 0);
                        v
                    })
                    .collect()
            } else {
                bytes(&entry["value"])
            };
            (key, value)
        })
        .collect()
}

/// Key bytes of `typed_flows` in the typed object: `{ __u32 addr; __u16
/// port; __u16 proto; }`, in memory order.
pub fn typed_flow_key(addr: u32, port: u16, proto: u16) -> Vec<u8> {
    [
        &addr.to_ne_bytes()[..],
        &port.to_ne_bytes(),
        &proto.to_ne_bytes(),
    ]
    .concat()
}

/// Value bytes of `typed_flows`: a `__u64` packet count, `char name[16]`,
/// an enum verdict at offset 24, padded to 32 bytes.
pub fn typed_flow_value(packets: u64, name: &str, verdict: u32) -> Vec<u8> {
    let mut value = vec![0u8; 32];
    value[..8].copy_from_slice(&packets.to_ne_bytes());
    value[8..8 + name.len()].copy_from_slice(name.as_bytes());
    value[24..28].copy_from_slice(&verdict.to_ne_bytes());
    value
}

/// A splitmix64 step: deterministic pseudo-random numbers (keys for
/// benchmarks and tests) with no allocation and no dependency.
pub fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Loads mapsync's typed object (maps whose keys and values carry BTF, see
/// `mapsync_ebpf::TYPED_OBJECT`) and pins each of its maps in `pins` under
/// its own name (`typed_flows`, `typed_shapes`, `typed_cpu_counts`,
/// `typed_cpu_pairs`). The pins keep the maps alive.
pub fn load_typed_maps(pins: &PinDir) {
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF at /sys/kernel/btf/vmlinux");
    let ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .load(mapsync_ebpf::TYPED_OBJECT)
        .expect("load typed.bpf.o");
    for name in mapsync_ebpf::TYPED_MAPS {
        ebpf.map(name)
            .unwrap_or_else(|| panic!("map {name} in typed.bpf.o"))
            .pin(pins.join(name))
            .unwrap_or_else(|e| panic!("pin {name}: {e}"));
    }
}

/// Number of possible CPUs (the slots of a per-CPU value).
pub fn possible_cpus() -> usize {
    aya::util::nr_cpus().expect("possible CPUs")
}

/// Lowercase hex of `bytes`, no separators.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}
