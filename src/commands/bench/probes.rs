//! The capability matrix, measured: after a row's load, one window in which
//! each probe writes and the observer's events are collected; a cell is
//! "yes" when the mirror reported the change *with the row's own source*
//! (every row also has the syscall trace attached, so attribution is by
//! source). Cells that cannot be measured here say why (by construction).

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use mapsync_core::Op;
use mapsync_core::control::{Apply, ApplyMode};
use mapsync_kernel::MapSync;
use mapsync_kernel::sys;
use tokio::sync::mpsc;

use super::env::{BenchEnv, DEMO_MAP, LRU_ENTRIES, LRU_MAP, SWITCH_MAP, TRACE_MAP, probe_source};
use super::measure::Seen;
use super::strategy::Strategy;

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Whether the strategy sees it.
    pub seen: bool,
    /// Measured in this run (`false`: by construction, see `detail`).
    pub measured: bool,
    /// What was measured, or why it holds by construction.
    pub detail: String,
}

impl Cell {
    fn measured(seen: bool, detail: String) -> Self {
        Self {
            seen,
            measured: true,
            detail,
        }
    }

    fn by_construction(seen: bool, why: &str) -> Self {
        Self {
            seen,
            measured: false,
            detail: why.into(),
        }
    }
}

/// What one strategy can see.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// A BPF program changing a value in place through a lookup pointer.
    pub in_place: Cell,
    /// The kernel evicting LRU entries.
    pub lru_eviction: Cell,
    /// A write by another process (`bpftool`).
    pub other_process: Cell,
    /// A set of writes made visible at one revision.
    pub atomic_set: Cell,
    /// Both of two writes to one key made back to back.
    pub every_write: Cell,
}

impl Capabilities {
    /// The cells with their column names, in the table's order.
    pub fn cells(&self) -> [(&'static str, &Cell); 5] {
        [
            ("in_place", &self.in_place),
            ("lru_eviction", &self.lru_eviction),
            ("other_process", &self.other_process),
            ("atomic_set", &self.atomic_set),
            ("every_write", &self.every_write),
        ]
    }
}

const SET: u8 = 8;
const LRU_INSERTS: u32 = LRU_ENTRIES * 4;

/// The demo keys the probes of polling rows bump: they must exist first.
pub fn prepare(env: &mut BenchEnv) -> anyhow::Result<()> {
    env.demo.count(probe_source(200, 0, 1), 64, 1)?;
    env.demo.count(probe_source(204, 0, 1), 64, 1)?;
    for i in 0..SET {
        env.demo.count(probe_source(202, 0, i), 64, 1)?;
    }
    Ok(())
}

/// Runs every probe of `strategy` in one window and judges the cells.
pub async fn probe(
    env: &mut BenchEnv,
    strategy: Strategy,
    row: u8,
    sync: &MapSync,
    seen: &mut mpsc::Receiver<Seen>,
) -> anyhow::Result<Capabilities> {
    // leftovers of the load are not the probes' events
    while seen.try_recv().is_ok() {}
    let switch = strategy == Strategy::Switch;
    let in_place_key = key(&probe_source(200, 0, 1).octets());
    let other_key = key(&[0xee, row, 0, 0]);
    if !switch {
        env.demo.bump(probe_source(200, 0, 1), 1)?;
        for i in 0..LRU_INSERTS {
            sys::update(env.lru_fd.as_fd(), &i.to_le_bytes(), &[1; 8], 0)
                .context("the LRU probe's insert failed")?;
        }
        bpftool_update(env.trace_id, &other_key)?;
    }
    let set_keys = write_set(env, strategy, row, sync).await?;
    let twice_key = write_twice(env, strategy, row, sync).await?;

    let window = strategy
        .poll_period()
        .map_or(Duration::from_secs(1), |period| {
            period * 2 + Duration::from_secs(1)
        });
    let deadline = tokio::time::Instant::now() + window;
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, seen.recv()).await {
        if event.source == strategy.source() {
            events.push(event);
        }
    }
    let on = |map: &str, key: &Bytes| {
        events
            .iter()
            .filter(|e| &*e.map == map && e.key == key)
            .count()
    };

    let set_map = strategy.map();
    let set_revisions: BTreeSet<u64> = events
        .iter()
        .filter(|e| &*e.map == set_map && set_keys.contains(&e.key))
        .map(|e| e.revision)
        .collect();
    let set_seen = set_keys.iter().all(|k| on(set_map, k) > 0);
    let set_detail = format!("{SET} writes seen at {} revision(s)", set_revisions.len());
    let atomic_set = match strategy {
        // one revision would still not make the poll atomic
        Strategy::Poll(_) if set_revisions.len() == 1 => Cell::by_construction(
            false,
            &format!(
                "{set_detail}, but a poll's read of the kernel map is not atomic: a set written during a poll is split"
            ),
        ),
        _ => Cell::measured(set_seen && set_revisions.len() == 1, set_detail),
    };
    let twice = on(set_map, &twice_key);
    let every_write = Cell::measured(twice >= 2, format!("2 writes, {twice} change(s) seen"));

    if switch {
        let why = "the mirror of a switchable map learns only its own Apply";
        return Ok(Capabilities {
            in_place: Cell::by_construction(false, why),
            lru_eviction: Cell::by_construction(
                false,
                "switchable maps hold hash or array inner maps",
            ),
            other_process: Cell::by_construction(false, why),
            atomic_set,
            every_write,
        });
    }
    let in_place = on(DEMO_MAP, &in_place_key);
    let evicted = events
        .iter()
        .filter(|e| &*e.map == LRU_MAP && e.op == Op::Delete)
        .count();
    let kernel_kept = env.lru_len()?;
    let other = on(TRACE_MAP, &other_key);
    let other_process = match strategy {
        // one revision would still not make the poll atomic
        Strategy::Poll(_) if set_revisions.len() == 1 => Cell::by_construction(
            true,
            "a poll re-reads the whole map whoever wrote it; here the always-attached trace reported it first",
        ),
        _ => Cell::measured(
            other > 0,
            format!("bpftool's write: {other} change(s) seen"),
        ),
    };
    Ok(Capabilities {
        in_place: Cell::measured(
            in_place > 0,
            format!("in-place bump: {in_place} change(s) seen"),
        ),
        lru_eviction: Cell::measured(
            evicted > 0,
            format!("{LRU_INSERTS} inserts, kernel kept {kernel_kept}: {evicted} eviction(s) seen"),
        ),
        other_process,
        atomic_set,
        every_write,
    })
}

fn key(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// Writes the `SET` keys of the atomic-set probe as one set where the
/// strategy can (trace: one `BPF_MAP_UPDATE_BATCH`; switch: one Apply).
async fn write_set(
    env: &mut BenchEnv,
    strategy: Strategy,
    row: u8,
    sync: &MapSync,
) -> anyhow::Result<Vec<Bytes>> {
    let keys: Vec<Bytes> = (0..SET)
        .map(|i| match strategy {
            Strategy::Emit => key(&probe_source(201, row, i).octets()),
            Strategy::Poll(_) => key(&probe_source(202, 0, i).octets()),
            _ => key(&[0xab, row, i, 0]),
        })
        .collect();
    match strategy {
        Strategy::Emit => {
            for i in 0..SET {
                env.demo.count(probe_source(201, row, i), 64, 1)?;
            }
        }
        Strategy::Poll(_) => {
            for i in 0..SET {
                env.demo.bump(probe_source(202, 0, i), 1)?;
            }
        }
        Strategy::Trace => {
            let flat: Vec<u8> = keys.iter().flat_map(|k| k.iter().copied()).collect();
            let values = vec![7u8; 8 * usize::from(SET)];
            let (done, result) =
                sys::update_batch(env.trace_fd.as_fd(), &flat, &values, u32::from(SET));
            result.context("the atomic-set probe's batch update failed")?;
            anyhow::ensure!(
                done == u32::from(SET),
                "the batch update wrote {done} of {SET}"
            );
        }
        Strategy::Switch => {
            let entries = keys
                .iter()
                .map(|k| (k.clone(), Some(key(&[7; 8]))))
                .collect();
            apply(sync, entries).await?;
        }
    }
    Ok(keys)
}

/// Writes one key twice, back to back; returns the key.
async fn write_twice(
    env: &mut BenchEnv,
    strategy: Strategy,
    row: u8,
    sync: &MapSync,
) -> anyhow::Result<Bytes> {
    Ok(match strategy {
        Strategy::Emit => {
            env.demo.count(probe_source(203, row, 1), 64, 2)?;
            key(&probe_source(203, row, 1).octets())
        }
        Strategy::Poll(_) => {
            env.demo.bump(probe_source(204, 0, 1), 2)?;
            key(&probe_source(204, 0, 1).octets())
        }
        Strategy::Trace => {
            let k = key(&[0xcd, row, 0, 0]);
            for value in [1u64, 2] {
                sys::update(env.trace_fd.as_fd(), &k, &value.to_le_bytes(), 0)
                    .context("the every-write probe's update failed")?;
            }
            k
        }
        Strategy::Switch => {
            let k = key(&[0xcd, row, 0, 0]);
            for value in [1u64, 2] {
                apply(sync, vec![(k.clone(), Some(key(&value.to_le_bytes())))]).await?;
            }
            k
        }
    })
}

async fn apply(sync: &MapSync, entries: Vec<(Bytes, Option<Bytes>)>) -> anyhow::Result<()> {
    sync.commands()
        .apply(Apply {
            map: SWITCH_MAP.into(),
            mode: ApplyMode::Merge,
            entries,
            expect_version: None,
        })
        .await
        .context("a probe's apply failed")?;
    Ok(())
}

/// `bpftool map update id ID key hex .. value hex ..`: a write by another process.
fn bpftool_update(map_id: u32, key: &[u8]) -> anyhow::Result<()> {
    let mut args = vec![
        "map".to_string(),
        "update".into(),
        "id".into(),
        map_id.to_string(),
        "key".into(),
        "hex".into(),
    ];
    args.extend(key.iter().map(|b| format!("{b:02x}")));
    args.extend(["value".into(), "hex".into()]);
    args.extend((0..8).map(|_| "2a".to_string()));
    let output = std::process::Command::new("bpftool")
        .args(&args)
        .output()
        .context("cannot run bpftool (the other-process probe needs it on PATH)")?;
    anyhow::ensure!(
        output.status.success(),
        "bpftool map update failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
