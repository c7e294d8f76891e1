//! The demo blocklist: `blocklist.bpf.c`'s XDP program, which drops packets
//! whose source is in a switchable map and counts verdicts per version it
//! saw, driven with `BPF_PROG_TEST_RUN`. For `mapsync demo` and tests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use aya::{Btf, Ebpf, EbpfLoader};
use mapsync_core::MapKind;

use crate::demo::{self, ipv4_packet};
use crate::error::KernelError;
use crate::switch::{self, SwitchShape};

/// XDP's drop verdict.
pub const XDP_DROP: u32 = 1;
/// XDP's pass verdict.
pub const XDP_PASS: u32 = 2;

/// Packets counted for one version, source and verdict.
pub type Verdicts = BTreeMap<(u64, Ipv4Addr, u32), u64>;

/// The loaded blocklist program; its switchable map is pinned at
/// [`DemoBlocklist::outer_pin`].
pub struct DemoBlocklist {
    ebpf: Ebpf,
    outer_pin: PathBuf,
}

impl std::fmt::Debug for DemoBlocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoBlocklist")
            .field("outer_pin", &self.outer_pin)
            .finish_non_exhaustive()
    }
}

impl DemoBlocklist {
    /// Creates the switchable map `demo_blocklist` under `pin_dir` (hash,
    /// `__u32` -> `__u32`, an empty set at version 1) unless it exists,
    /// and loads the program with `pin_dir` as its pin root.
    pub fn load(pin_dir: &Path) -> Result<Self, KernelError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| KernelError::Host {
            what: "creating the pin directory",
            source,
        })?;
        let outer_pin = pin_dir.join(mapsync_ebpf::BLOCKLIST_MAP);
        switch::create(
            &outer_pin,
            SwitchShape {
                kind: MapKind::Hash,
                key_size: 4,
                value_size: 4,
                max_entries: mapsync_ebpf::BLOCKLIST_MAX,
            },
        )?;
        let btf = Btf::from_sys_fs().map_err(|error| KernelError::Host {
            what: "reading kernel BTF at /sys/kernel/btf/vmlinux",
            source: std::io::Error::other(error),
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(pin_dir)
            .load(mapsync_ebpf::BLOCKLIST_OBJECT)?;
        program(&mut ebpf)?.load().map_err(program_error)?;
        Ok(Self { ebpf, outer_pin })
    }

    /// Where the blocklist's outer map is pinned (serve it with
    /// `MapSpec::switch`).
    pub fn outer_pin(&self) -> &Path {
        &self.outer_pin
    }

    /// Runs the program on a packet from `source`; returns its verdict
    /// ([`XDP_DROP`] or [`XDP_PASS`]).
    pub fn inject(&mut self, source: Ipv4Addr) -> Result<u32, KernelError> {
        let packet = ipv4_packet(source, 64);
        program(&mut self.ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(&packet),
                ..TestRunOptions::default()
            })
            .map(|result| result.return_value)
            .map_err(program_error)
    }

    /// Every packet counted so far, by version, source and verdict.
    pub fn verdicts(&self) -> Result<Verdicts, KernelError> {
        let name = mapsync_ebpf::BLOCKLIST_VERDICTS_MAP;
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| KernelError::MissingInObject {
                what: "map",
                name: name.into(),
            })?;
        let counts: BpfHashMap<&MapData, [u8; 16], u64> =
            BpfHashMap::try_from(map).map_err(|source| KernelError::Map {
                map: name.into(),
                source,
            })?;
        let mut verdicts = Verdicts::new();
        for entry in counts.iter() {
            let (key, count) = entry.map_err(|source| KernelError::Map {
                map: name.into(),
                source,
            })?;
            let version = u64::from_ne_bytes(key[..8].try_into().expect("8 bytes"));
            let source = Ipv4Addr::from(<[u8; 4]>::try_from(&key[8..12]).expect("4 bytes"));
            let verdict = u32::from_ne_bytes(key[12..16].try_into().expect("4 bytes"));
            verdicts.insert((version, source, verdict), count);
        }
        Ok(verdicts)
    }
}

/// The blocklist key of `source` (network order, as the program reads it).
pub fn blocklist_key(source: Ipv4Addr) -> [u8; 4] {
    source.octets()
}

fn program_error(source: ProgramError) -> KernelError {
    demo::program_error(mapsync_ebpf::BLOCKLIST_PROGRAM, source)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, KernelError> {
    demo::typed_program(ebpf, mapsync_ebpf::BLOCKLIST_PROGRAM)
}
