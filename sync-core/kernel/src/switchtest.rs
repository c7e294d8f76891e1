//! The switch checker: `switchtest.bpf.c`'s XDP programs, which walk a set
//! and count runs that saw entries of different tags, driven with
//! `BPF_PROG_TEST_RUN`. For the switchable-map tests and benches only
//! (feature `demo`).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aya::maps::{Array, MapData};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::demo::{program_error, typed_program};
use crate::error::KernelError;

/// What the checker counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckerCounts {
    /// Runs.
    pub runs: u64,
    /// Runs that saw entries carrying different tags.
    pub mixed: u64,
    /// Runs of the switchable check whose version was not the tag.
    pub version_mismatch: u64,
    /// Runs that missed one of the keys.
    pub missing: u64,
}

/// Which set a run walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedSet {
    /// The active inner map of `switchtest_set` (with the version check).
    Switchable,
    /// The plain hash `switchtest_plain`.
    Plain,
    /// The switchable map, from the tc (sched_cls) variant of the check.
    SwitchableFromTc,
}

/// The loaded checker. `switchtest_set` and its version store are reused
/// from the pins under the directory given to [`SwitchChecker::load`] (so
/// create the switchable map there first, as
/// `<dir>/switchtest_set`).
pub struct SwitchChecker {
    ebpf: Ebpf,
}

impl std::fmt::Debug for SwitchChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchChecker").finish_non_exhaustive()
    }
}

impl SwitchChecker {
    /// Loads the checker with `pin_dir` as the pin root of its
    /// switchable map.
    pub fn load(pin_dir: &Path) -> Result<Self, KernelError> {
        let btf = Btf::from_sys_fs().map_err(|error| KernelError::Host {
            what: "reading kernel BTF at /sys/kernel/btf/vmlinux",
            source: std::io::Error::other(error),
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(pin_dir)
            .load(mapsync_ebpf::SWITCHTEST_OBJECT)?;
        for name in [
            mapsync_ebpf::SWITCHTEST_CHECK_SET,
            mapsync_ebpf::SWITCHTEST_CHECK_PLAIN,
        ] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| program_error(name, source))?;
        }
        tc_program(&mut ebpf)?
            .load()
            .map_err(|source| program_error(mapsync_ebpf::SWITCHTEST_CHECK_SET_TC, source))?;
        Ok(Self { ebpf })
    }

    /// Runs the check over `set`, `repeat` times in one test run.
    pub fn run(&mut self, set: CheckedSet, repeat: u32) -> Result<(), KernelError> {
        let packet = [0u8; 64];
        let options = TestRunOptions {
            data_in: Some(&packet),
            repeat,
            ..TestRunOptions::default()
        };
        let name = match set {
            CheckedSet::Switchable => mapsync_ebpf::SWITCHTEST_CHECK_SET,
            CheckedSet::Plain => mapsync_ebpf::SWITCHTEST_CHECK_PLAIN,
            CheckedSet::SwitchableFromTc => {
                return tc_program(&mut self.ebpf)?
                    .test_run(options)
                    .map(drop)
                    .map_err(|source| {
                        program_error(mapsync_ebpf::SWITCHTEST_CHECK_SET_TC, source)
                    });
            }
        };
        program(&mut self.ebpf, name)?
            .test_run(options)
            .map(drop)
            .map_err(|source| program_error(name, source))
    }

    /// The counts so far.
    pub fn counts(&self) -> Result<CheckerCounts, KernelError> {
        let name = mapsync_ebpf::SWITCHTEST_STATS_MAP;
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| KernelError::MissingInObject {
                what: "map",
                name: name.into(),
            })?;
        let stats: Array<&MapData, u64> =
            Array::try_from(map).map_err(|source| KernelError::Map {
                map: name.into(),
                source,
            })?;
        let get = |index| {
            stats.get(&index, 0).map_err(|source| KernelError::Map {
                map: name.into(),
                source,
            })
        };
        Ok(CheckerCounts {
            runs: get(0)?,
            mixed: get(1)?,
            version_mismatch: get(2)?,
            missing: get(3)?,
        })
    }

    /// A new fd of the plain map `switchtest_plain`, to write it.
    pub fn plain_map(&self) -> Result<OwnedFd, KernelError> {
        let name = mapsync_ebpf::SWITCHTEST_PLAIN_MAP;
        match self.ebpf.map(name) {
            Some(aya::maps::Map::HashMap(data)) => {
                data.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| KernelError::Host {
                        what: "duplicating the plain map's fd",
                        source,
                    })
            }
            _ => Err(KernelError::MissingInObject {
                what: "map",
                name: name.into(),
            }),
        }
    }
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, KernelError> {
    typed_program(ebpf, mapsync_ebpf::SWITCHTEST_CHECK_SET_TC)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, KernelError> {
    typed_program(ebpf, name)
}
