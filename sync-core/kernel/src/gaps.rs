//! Loss detection from per-CPU sequence numbers.
//!
//! Every producer numbers its records with its CPU's counter before it
//! reserves ring space, so a record lost to a full ring leaves a hole in that
//! CPU's sequence. Producers on one CPU can be preempted between numbering and
//! committing, so records may arrive slightly out of order: a hole is only
//! *confirmed* once it has stayed open for a grace period. A sequence number
//! seen twice is a duplicate and is dropped.

use std::collections::{BTreeMap, HashMap};

/// Most holes remembered per CPU; beyond that the oldest are confirmed at once.
const MAX_OPEN_HOLES: usize = 4096;

/// CPU numbers below this are looked up by index (every real CPU; the
/// kernel's own limit is 8,192), others in a hash map.
const DIRECT_CPUS: usize = 1024;

/// Per-CPU sequence tracking.
#[derive(Debug, Default)]
pub struct SeqTracker {
    cpus: CpuTable,
    confirmed: u64,
}

/// The per-CPU states: by index for the usual CPU numbers (no hashing on
/// the ingest loop's per-record path), in a map for any other number a
/// record may carry.
#[derive(Debug, Default)]
struct CpuTable {
    direct: Vec<Option<CpuSeq>>,
    others: HashMap<u32, CpuSeq>,
}

impl CpuTable {
    fn get_mut(&mut self, cpu: u32) -> Option<&mut CpuSeq> {
        let index = cpu as usize;
        if index < DIRECT_CPUS {
            self.direct.get_mut(index).and_then(Option::as_mut)
        } else {
            self.others.get_mut(&cpu)
        }
    }

    fn insert(&mut self, cpu: u32, state: CpuSeq) {
        let index = cpu as usize;
        if index < DIRECT_CPUS {
            if self.direct.len() <= index {
                self.direct.resize_with(index + 1, || None);
            }
            self.direct[index] = Some(state);
        } else {
            self.others.insert(cpu, state);
        }
    }

    fn entry(&mut self, cpu: u32, or_insert: impl FnOnce() -> CpuSeq) -> &mut CpuSeq {
        if self.get_mut(cpu).is_none() {
            self.insert(cpu, or_insert());
        }
        self.get_mut(cpu).expect("inserted just above")
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut CpuSeq> {
        self.direct
            .iter_mut()
            .flatten()
            .chain(self.others.values_mut())
    }
}

#[derive(Debug, Default)]
struct CpuSeq {
    /// Highest sequence number seen.
    highest: u64,
    /// Missing numbers below `highest`, with the tick at which they opened.
    holes: BTreeMap<u64, u64>,
}

/// What [`SeqTracker::observe`] says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// A number not seen before.
    New,
    /// Already seen: drop the record.
    Duplicate,
}

impl SeqTracker {
    /// Records that `seq` arrived from `cpu` during tick `now`. The first
    /// record of a CPU only sets the starting point: what came before this
    /// process is covered by the initial dump.
    pub fn observe(&mut self, cpu: u32, seq: u64, now: u64) -> SeqVerdict {
        let Some(state) = self.cpus.get_mut(cpu) else {
            self.cpus.insert(
                cpu,
                CpuSeq {
                    highest: seq,
                    holes: BTreeMap::new(),
                },
            );
            return SeqVerdict::New;
        };
        if seq > state.highest {
            let first_missing = state.highest + 1;
            // a huge jump is one loss event, not millions of holes
            let span = (seq - first_missing).min(MAX_OPEN_HOLES as u64);
            for missing in seq - span..seq {
                if missing >= first_missing {
                    state.holes.insert(missing, now);
                }
            }
            if seq - first_missing > span {
                self.confirmed += seq - first_missing - span;
            }
            state.highest = seq;
            while state.holes.len() > MAX_OPEN_HOLES {
                state.holes.pop_first();
                self.confirmed += 1;
            }
            SeqVerdict::New
        } else if state.holes.remove(&seq).is_some() {
            SeqVerdict::New
        } else {
            SeqVerdict::Duplicate
        }
    }

    /// Declares every record of `cpu` numbered up to `seq` covered: a resync
    /// whose dumps started after the CPU's counter read `seq` holds their
    /// writes. Open holes at or below it are forgotten (not losses), numbers
    /// at or below it that arrive later are duplicates of what the dump said,
    /// and only numbers above it can open new holes. So one loss makes one
    /// resync, not a second one when the hole behind it is noticed later.
    pub fn cover_through(&mut self, cpu: u32, seq: u64) {
        let state = self.cpus.entry(cpu, || CpuSeq {
            highest: seq,
            holes: BTreeMap::new(),
        });
        state.holes.retain(|missing, _| *missing > seq);
        state.highest = state.highest.max(seq);
    }

    /// Confirms holes opened before tick `now - grace` as lost records, and
    /// returns how many records were lost since the last call.
    pub fn take_lost(&mut self, now: u64, grace: u64) -> u64 {
        for state in self.cpus.values_mut() {
            let before = state.holes.len();
            state
                .holes
                .retain(|_, opened| now.saturating_sub(*opened) < grace);
            self.confirmed += (before - state.holes.len()) as u64;
        }
        std::mem::take(&mut self.confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_records_lose_nothing() {
        let mut seqs = SeqTracker::default();
        for seq in 10..100 {
            assert_eq!(seqs.observe(0, seq, 0), SeqVerdict::New);
        }
        assert_eq!(seqs.take_lost(10, 1), 0);
    }

    #[test]
    fn a_late_record_closes_its_hole_and_a_repeat_is_a_duplicate() {
        let mut seqs = SeqTracker::default();
        seqs.observe(1, 1, 0);
        seqs.observe(1, 3, 0);
        assert_eq!(seqs.observe(1, 2, 0), SeqVerdict::New);
        assert_eq!(seqs.observe(1, 2, 0), SeqVerdict::Duplicate);
        assert_eq!(seqs.observe(1, 3, 0), SeqVerdict::Duplicate);
        assert_eq!(seqs.take_lost(5, 1), 0);
    }

    #[test]
    fn a_hole_that_stays_open_past_the_grace_is_a_loss() {
        let mut seqs = SeqTracker::default();
        seqs.observe(0, 1, 0);
        seqs.observe(0, 5, 0); // 2, 3, 4 missing
        assert_eq!(seqs.take_lost(0, 2), 0, "still within grace");
        seqs.observe(0, 3, 1);
        assert_eq!(seqs.take_lost(2, 2), 2, "2 and 4 never came");
        assert_eq!(seqs.take_lost(9, 2), 0, "counted once");
    }

    #[test]
    fn a_covered_hole_is_not_a_loss_but_a_later_one_is() {
        let mut seqs = SeqTracker::default();
        seqs.observe(0, 1, 0);
        seqs.observe(0, 5, 0); // 2, 3, 4 missing
        // a resync read the counter at 7: 2..=7 are in its dumps
        seqs.cover_through(0, 7);
        assert_eq!(seqs.observe(0, 6, 1), SeqVerdict::Duplicate);
        assert_eq!(seqs.observe(0, 10, 1), SeqVerdict::New); // 8, 9 missing
        assert_eq!(seqs.take_lost(9, 2), 2, "only the holes after the cover");
        // a CPU not seen yet starts at the cover
        seqs.cover_through(1, 100);
        assert_eq!(seqs.observe(1, 100, 9), SeqVerdict::Duplicate);
        assert_eq!(seqs.observe(1, 101, 9), SeqVerdict::New);
        assert_eq!(seqs.take_lost(20, 2), 0);
    }

    #[test]
    fn cpu_numbers_past_the_direct_table_are_tracked_alike() {
        let mut seqs = SeqTracker::default();
        for cpu in [0, 3, DIRECT_CPUS as u32 - 1, DIRECT_CPUS as u32, u32::MAX] {
            assert_eq!(seqs.observe(cpu, 10, 0), SeqVerdict::New, "cpu {cpu}");
            assert_eq!(seqs.observe(cpu, 12, 0), SeqVerdict::New, "cpu {cpu}");
            assert_eq!(seqs.observe(cpu, 12, 0), SeqVerdict::Duplicate, "cpu {cpu}");
        }
        // one hole (11) per CPU, confirmed after the grace
        assert_eq!(seqs.take_lost(5, 2), 5);
        seqs.cover_through(u32::MAX, 20);
        assert_eq!(seqs.observe(u32::MAX, 20, 5), SeqVerdict::Duplicate);
        assert_eq!(seqs.observe(u32::MAX, 21, 5), SeqVerdict::New);
    }

    #[test]
    fn a_huge_jump_counts_every_lost_record_without_remembering_them_all() {
        let mut seqs = SeqTracker::default();
        seqs.observe(0, 1, 0);
        seqs.observe(0, 1_000_001, 0);
        assert_eq!(seqs.take_lost(10, 1), 999_999);
    }

    proptest! {
        /// Whatever is dropped, duplicated or reordered (within the grace),
        /// every dropped number is counted exactly once and every delivered
        /// number is New exactly once.
        #[test]
        fn counts_exactly_the_dropped_records(
            drops in proptest::collection::vec(any::<bool>(), 1..300),
            dup_every in 2usize..20,
            swap_every in 2usize..20,
        ) {
            let mut delivered: Vec<u64> = Vec::new();
            // seq 0 always arrives first: it sets the starting point
            let mut order: Vec<u64> = (1..=drops.len() as u64).filter(|s| !drops[*s as usize - 1]).collect();
            for i in (1..order.len()).step_by(swap_every) {
                order.swap(i - 1, i);
            }
            let mut seqs = SeqTracker::default();
            assert_eq!(seqs.observe(0, 0, 0), SeqVerdict::New);
            for (i, seq) in order.iter().enumerate() {
                if seqs.observe(0, *seq, 0) == SeqVerdict::New {
                    delivered.push(*seq);
                }
                if i % dup_every == 0 {
                    prop_assert_eq!(seqs.observe(0, *seq, 0), SeqVerdict::Duplicate);
                }
            }
            // the highest record may itself have been dropped: those after the
            // last delivered one are invisible to sequence numbers (the drop
            // counter covers them)
            let last = order.iter().copied().max().unwrap_or(0);
            let expected_lost = drops[..last as usize].iter().filter(|d| **d).count() as u64;
            prop_assert_eq!(seqs.take_lost(10, 1), expected_lost);
            delivered.sort_unstable();
            delivered.dedup();
            prop_assert_eq!(delivered.len(), order.len());
        }
    }
}
