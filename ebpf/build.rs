//! Compiles `src/bpf/*.bpf.c` with clang into `$OUT_DIR/<name>.bpf.o`: the
//! objects a library build ships ([`LIBRARY_OBJECTS`]) always, every other
//! one (the demo writer, test objects) only with the `demo` feature, which is
//! also what embeds them.
//!
//! `vmlinux.h` is generated from the running kernel's BTF with bpftool. A
//! missing tool fails the build with the Debian packages to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const PACKAGES: &str = "apt-get install -y clang llvm libbpf-dev bpftool";

/// The programs mapsync itself loads; the rest of `src/bpf/` is built only
/// for the `demo` feature.
const LIBRARY_OBJECTS: &[&str] = &["trace.bpf.c", "dump.bpf.c"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("include");
    let src = manifest_dir.join("src/bpf");

    println!(
        "cargo:rerun-if-changed={}",
        include.join("mapsync.h").display()
    );
    // the directory too, so that a new program file triggers a rebuild
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=MAPSYNC_VMLINUX_BTF");
    println!("cargo:rerun-if-env-changed=CLANG");

    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        bail!("libbpf headers not found (/usr/include/bpf/bpf_helpers.h): {PACKAGES}");
    }
    generate_vmlinux_h(&out_dir)?;

    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let demo = std::env::var_os("CARGO_FEATURE_DEMO").is_some();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(".bpf.c"))
        .filter(|path| {
            demo || path
                .file_name()
                .is_some_and(|n| LIBRARY_OBJECTS.iter().any(|o| n == *o))
        })
        .collect();
    sources.sort();
    if !demo {
        remove_test_objects(&out_dir)?;
    }
    for source in sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let stem = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
            .context("source name")?;
        let object = out_dir.join(format!("{stem}.o"));
        let status = Command::new(&clang)
            .args([
                "-target", "bpf", "-mcpu=v3", "-g", "-O2", "-Wall", "-Werror",
            ])
            .arg("-D__TARGET_ARCH_x86")
            .arg("-I")
            .arg(&out_dir)
            .arg("-I")
            .arg(&include)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .with_context(|| format!("running `{clang}` (is clang installed? {PACKAGES})"))?;
        if !status.success() {
            bail!("clang failed on {}: {status}", source.display());
        }
    }
    Ok(())
}

/// Removes objects a `demo` build left in `out_dir` (cargo keeps the same
/// directory across feature changes), so that only what was built for this
/// configuration is there.
fn remove_test_objects(out_dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let library = LIBRARY_OBJECTS.iter().any(|source| {
            source
                .strip_suffix(".c")
                .is_some_and(|stem| name == format!("{stem}.o"))
        });
        if name.ends_with(".bpf.o") && !library {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes `vmlinux.h` for the kernel whose BTF is at `MAPSYNC_VMLINUX_BTF`
/// (default `/sys/kernel/btf/vmlinux`).
fn generate_vmlinux_h(out_dir: &Path) -> anyhow::Result<()> {
    let btf = std::env::var("MAPSYNC_VMLINUX_BTF")
        .unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".to_owned());
    if !Path::new(&btf).exists() {
        bail!(
            "kernel BTF not found at {btf}: mapsync needs a kernel built with CONFIG_DEBUG_INFO_BTF"
        );
    }
    let bpftool = ["bpftool", "/usr/sbin/bpftool"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("version").output().is_ok())
        .with_context(|| format!("bpftool not found: {PACKAGES}"))?;
    let output = Command::new(bpftool)
        .args(["btf", "dump", "file", &btf, "format", "c"])
        .output()
        .with_context(|| format!("running bpftool (is it installed? {PACKAGES})"))?;
    if !output.status.success() {
        bail!(
            "bpftool btf dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(out_dir.join("vmlinux.h"), output.stdout)?;
    Ok(())
}
