//! The bench's kernel objects, made once per run in a scratch pin directory
//! and removed after: the demo XDP program and its map `demo_pkts` (emit,
//! and in-place writes for polling), a hash written through `bpf()` (trace),
//! a small LRU hash (eviction probe) and a switchable map (atomic switch).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mapsync_core::map_info::MapKind;
use mapsync_kernel::sys::{self, MapCreate};
use mapsync_kernel::{DemoWriter, MapSpec, SwitchShape, SyncConfig, switch};

/// Name the demo's map is mirrored under.
pub const DEMO_MAP: &str = "demo_pkts";
/// The hash written through `bpf()` by the bench and by `bpftool`.
pub const TRACE_MAP: &str = "bench_trace";
/// The LRU hash of the eviction probe.
pub const LRU_MAP: &str = "bench_lru";
/// The switchable map written with `Apply`.
pub const SWITCH_MAP: &str = "bench_switch";
/// Capacity of the LRU map: the probe inserts four times as many keys.
pub const LRU_ENTRIES: u32 = 64;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// The demo map's key of load key `index`: an IPv4 source in 10.1.0.0/16,
/// network byte order, as the demo program keys it.
pub fn demo_source(index: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (index >> 8) as u8, index as u8)
}

/// A key of the probes in the demo map: 10.`block`.`row`.`index`.
pub fn probe_source(block: u8, row: u8, index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, block, row, index)
}

/// Kernel objects shared by every row.
pub struct BenchEnv {
    /// The scratch pin directory (removed on drop).
    pub pin_dir: PathBuf,
    /// The demo writer program.
    pub demo: DemoWriter,
    /// The hash written through `bpf()`.
    pub trace_fd: OwnedFd,
    /// Its kernel id (for `bpftool map update id`).
    pub trace_id: u32,
    /// The LRU hash.
    pub lru_fd: OwnedFd,
}

impl std::fmt::Debug for BenchEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchEnv")
            .field("pin_dir", &self.pin_dir)
            .field("trace_id", &self.trace_id)
            .finish_non_exhaustive()
    }
}

impl BenchEnv {
    /// Loads the demo program and creates the maps under a fresh directory
    /// in `/sys/fs/bpf`.
    pub fn create() -> anyhow::Result<Self> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mapsync-bench-{}", std::process::id()));
        std::fs::create_dir_all(&pin_dir).with_context(|| {
            format!(
                "cannot create {} (is bpffs mounted, are you root?)",
                pin_dir.display()
            )
        })?;
        let demo = DemoWriter::load(&pin_dir)
            .context("cannot load the demo BPF program (are you root?)")?;
        let trace_fd = create_pinned(&pin_dir, TRACE_MAP, BPF_MAP_TYPE_HASH, 65536)?;
        let trace_id = mapsync_kernel::open::map_id(trace_fd.as_fd())
            .context("cannot read the id of the bench's hash map")?;
        let lru_fd = create_pinned(&pin_dir, LRU_MAP, BPF_MAP_TYPE_LRU_HASH, LRU_ENTRIES)?;
        let shape = SwitchShape {
            kind: MapKind::Hash,
            key_size: 4,
            value_size: 8,
            max_entries: 65536,
        };
        switch::create(&pin_dir.join(SWITCH_MAP), shape)
            .context("cannot create the bench's switchable map")?;
        Ok(Self {
            pin_dir,
            demo,
            trace_fd,
            trace_id,
            lru_fd,
        })
    }

    /// What one row's `MapSync` mirrors: the four maps, polled every
    /// `poll` if given (the switchable map is never polled), no reconcile.
    pub fn config(&self, poll: Option<Duration>) -> SyncConfig {
        let polled = |spec: MapSpec| match poll {
            Some(every) => spec.polled(every),
            None => spec,
        };
        SyncConfig {
            maps: vec![
                polled(MapSpec::id(Some(DEMO_MAP), self.demo.map_id())),
                polled(MapSpec::pin(Some(TRACE_MAP), self.pin_dir.join(TRACE_MAP))),
                polled(MapSpec::pin(Some(LRU_MAP), self.pin_dir.join(LRU_MAP))),
                MapSpec::switch(Some(SWITCH_MAP), self.pin_dir.join(SWITCH_MAP)),
            ],
            pin_dir: self.pin_dir.clone(),
            reconcile_interval: None,
            ..SyncConfig::default()
        }
    }

    /// Removes every key of the LRU map (before a row's eviction probe).
    pub fn clear_lru(&self) -> anyhow::Result<()> {
        let mut next = [0u8; 4];
        while sys::next_key(self.lru_fd.as_fd(), None, &mut next)
            .context("cannot list the LRU map")?
        {
            sys::delete(self.lru_fd.as_fd(), &next).context("cannot clear the LRU map")?;
        }
        Ok(())
    }

    /// Number of keys the LRU map holds in the kernel.
    pub fn lru_len(&self) -> anyhow::Result<usize> {
        let mut count = 0;
        let mut key: Option<[u8; 4]> = None;
        loop {
            let mut next = [0u8; 4];
            let more = sys::next_key(self.lru_fd.as_fd(), key.as_ref().map(|k| &k[..]), &mut next)
                .context("cannot list the LRU map")?;
            if !more {
                return Ok(count);
            }
            count += 1;
            key = Some(next);
        }
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn create_pinned(dir: &Path, name: &str, map_type: u32, max: u32) -> anyhow::Result<OwnedFd> {
    let fd = sys::map_create(&MapCreate {
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries: max,
        map_flags: 0,
        inner_map_fd: None,
        name: name.into(),
        btf: None,
    })
    .with_context(|| format!("cannot create the bench map {name}"))?;
    sys::obj_pin(fd.as_fd(), &dir.join(name))
        .with_context(|| format!("cannot pin the bench map {name}"))?;
    Ok(fd)
}
