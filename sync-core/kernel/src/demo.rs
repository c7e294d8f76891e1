//! The demo writer: mapsync's XDP demo program, loaded so that it shares the
//! capture ring, and driven with `BPF_PROG_TEST_RUN` (no interface needed).

use std::net::Ipv4Addr;
use std::path::Path;

use aya::programs::{
    Program, ProgramError, RawTracePoint, RawTracePointRunOptions, TestRun, TestRunOptions, Xdp,
};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::error::KernelError;

/// The loaded demo program and its map.
pub struct DemoWriter {
    ebpf: Ebpf,
    map_id: u32,
    cpu_hits_id: u32,
}

impl std::fmt::Debug for DemoWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoWriter")
            .field("map_id", &self.map_id)
            .finish_non_exhaustive()
    }
}

impl DemoWriter {
    /// Loads the demo object with its shared maps pinned under `pin_dir`
    /// (the same directory `MapSync` uses, so both share the ring).
    pub fn load(pin_dir: &Path) -> Result<Self, KernelError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| KernelError::Host {
            what: "creating the pin directory",
            source,
        })?;
        let btf = Btf::from_sys_fs().map_err(|error| KernelError::Host {
            what: "reading kernel BTF at /sys/kernel/btf/vmlinux",
            source: std::io::Error::other(error),
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(pin_dir)
            .load(mapsync_ebpf::DEMO_OBJECT)?;
        for name in [
            mapsync_ebpf::DEMO_COUNT_PROGRAM,
            mapsync_ebpf::DEMO_FORGET_PROGRAM,
            mapsync_ebpf::DEMO_BUMP_PROGRAM,
        ] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| program_error(name, source))?;
        }
        raw_program(&mut ebpf, mapsync_ebpf::DEMO_CPU_HIT_PROGRAM)?
            .load()
            .map_err(|source| program_error(mapsync_ebpf::DEMO_CPU_HIT_PROGRAM, source))?;
        let map_id = loaded_map_id(&ebpf, mapsync_ebpf::DEMO_MAP)?;
        let cpu_hits_id = loaded_map_id(&ebpf, mapsync_ebpf::DEMO_CPU_HITS_MAP)?;
        Ok(Self {
            ebpf,
            map_id,
            cpu_hits_id,
        })
    }

    /// Kernel id of the demo's map `demo_pkts`.
    pub fn map_id(&self) -> u32 {
        self.map_id
    }

    /// Kernel id of the demo's per-CPU array `demo_cpu_hits`.
    pub fn cpu_hits_id(&self) -> u32 {
        self.cpu_hits_id
    }

    /// Runs `demo_bump` on a packet from `source`, `repeat` times: increments
    /// its packet count in place, without any change record.
    pub fn bump(&mut self, source: Ipv4Addr, repeat: u32) -> Result<(), KernelError> {
        self.run(mapsync_ebpf::DEMO_BUMP_PROGRAM, source, 64, repeat)
    }

    /// Runs `demo_cpu_hit` once on `cpu`: slot 0 of `demo_cpu_hits` grows by
    /// one on that CPU only, in place.
    pub fn cpu_hit(&mut self, cpu: u32) -> Result<(), KernelError> {
        let name = mapsync_ebpf::DEMO_CPU_HIT_PROGRAM;
        let mut options = RawTracePointRunOptions::new();
        options.cpu = Some(cpu);
        raw_program(&mut self.ebpf, name)?
            .test_run(options)
            .map(drop)
            .map_err(|source| program_error(name, source))
    }

    /// Runs `demo_count` on a packet from `source` of `len` bytes (at least
    /// 34), `repeat` times: the program counts it through `mapsync_update()`.
    pub fn count(&mut self, source: Ipv4Addr, len: usize, repeat: u32) -> Result<(), KernelError> {
        self.run(mapsync_ebpf::DEMO_COUNT_PROGRAM, source, len, repeat)
    }

    /// Runs `demo_forget` on a packet from `source`: the program removes its
    /// entry through `mapsync_delete()`.
    pub fn forget(&mut self, source: Ipv4Addr) -> Result<(), KernelError> {
        self.run(mapsync_ebpf::DEMO_FORGET_PROGRAM, source, 64, 1)
    }

    fn run(
        &mut self,
        name: &str,
        source: Ipv4Addr,
        len: usize,
        repeat: u32,
    ) -> Result<(), KernelError> {
        let packet = ipv4_packet(source, len);
        program(&mut self.ebpf, name)?
            .test_run(TestRunOptions {
                data_in: Some(&packet),
                repeat,
                ..TestRunOptions::default()
            })
            .map(drop)
            .map_err(|source| KernelError::Program {
                program: name.into(),
                source,
            })
    }
}

fn loaded_map_id(ebpf: &Ebpf, name: &str) -> Result<u32, KernelError> {
    let data = match ebpf.map(name) {
        Some(aya::maps::Map::HashMap(data) | aya::maps::Map::PerCpuArray(data)) => data,
        _ => {
            return Err(KernelError::MissingInObject {
                what: "map",
                name: name.into(),
            });
        }
    };
    Ok(data
        .info()
        .map_err(|source| KernelError::Map {
            map: name.into(),
            source,
        })?
        .id())
}

/// A program's load or run error, naming the program.
pub(crate) fn program_error(name: &str, source: ProgramError) -> KernelError {
    KernelError::Program {
        program: name.into(),
        source,
    }
}

/// The program `name` of a loaded test or demo object, as its kind `T`
/// (`Xdp`, `RawTracePoint`, `SchedClassifier`, ...).
pub(crate) fn typed_program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| KernelError::MissingInObject {
            what: "program",
            name: name.into(),
        })?
        .try_into()
        .map_err(|source| program_error(name, source))
}

fn raw_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut RawTracePoint, KernelError> {
    typed_program(ebpf, name)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, KernelError> {
    typed_program(ebpf, name)
}

/// An Ethernet + IPv4 frame from `source`, `len` bytes long (at least 34).
pub(crate) fn ipv4_packet(source: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut packet = vec![0u8; len.max(34)];
    packet[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    packet[14] = 0x45; // version 4, header length 5 words
    let total = (packet.len() - 14) as u16;
    packet[16..18].copy_from_slice(&total.to_be_bytes());
    packet[22] = 64; // ttl
    packet[23] = 17; // udp
    packet[26..30].copy_from_slice(&source.octets());
    packet[30..34].copy_from_slice(&[10, 0, 0, 1]);
    packet
}
