//! One batch of ring records: read from the ring (decoded into a shared
//! arena, checked against the per-CPU sequences), then routed to changes.
//! The batch's buffers are kept from batch to batch for their capacity, so
//! a steady stream of records allocates one arena chunk per ~16 KiB of keys
//! and values and nothing per record on this side.

use std::time::Instant;

use bytes::Bytes;
use mapsync_core::event::EventSource;
use mapsync_core::store::Change;

use super::{Ingest, MAX_RECORDS_PER_BATCH};
use crate::gaps::{SeqTracker, SeqVerdict};
use crate::phases::Phase;
use crate::record::{Record, RecordArena};
use crate::ring::Next;
use crate::route::{Action, MappedMap, route};
use crate::stats::SyncStats;

/// The buffers of the batch being read and applied.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The records read, in ring order.
    pub(crate) records: Vec<Record>,
    /// The changes routed from them.
    changes: Vec<Change>,
    /// Their write times (for the lag counters).
    written_ns: Vec<u64>,
    /// Where their keys and values are copied to.
    arena: RecordArena,
}

/// Whether the changes of a batch are all of one map and source, as far
/// as routing has got.
#[derive(Debug, Clone, Copy)]
enum Uniform<'a> {
    /// No change yet.
    None,
    /// Every change so far is of this map and source.
    One(&'a str, EventSource),
    /// Changes of several maps or sources.
    Mixed,
}

impl<'a> Uniform<'a> {
    fn note(&mut self, map: Option<MappedMap<'a>>, source: EventSource) {
        let Some(map) = map else {
            *self = Uniform::Mixed;
            return;
        };
        *self = match *self {
            Uniform::None => Uniform::One(map.name, source),
            Uniform::One(name, known) if std::ptr::eq(name, &**map.name) && known == source => {
                Uniform::One(name, known)
            }
            _ => Uniform::Mixed,
        };
    }
}

impl Ingest {
    /// Reads up to one batch of records from the ring into `self.batch`:
    /// at most [`MAX_RECORDS_PER_BATCH`] ring items, decodable or not, so
    /// this always returns. Returns whether the ring may hold more (the batch
    /// was full, or the ring was reset on an impossible position, a record
    /// too long, or a run of undecodable records; the reset owes a resync of
    /// every map, made by the caller through [`Ingest::after_reset`]).
    pub(super) fn read_ring(&mut self) -> bool {
        let started = Instant::now();
        let Ingest {
            ring,
            ring_health,
            seqs,
            stats,
            ticks,
            batch,
            ..
        } = self;
        batch.records.clear();
        let mut items = 0;
        let mut more = false;
        while items < MAX_RECORDS_PER_BATCH {
            // a reset the consumer made, or a fault found here
            let outcome = match ring.read_next() {
                Next::Empty => break,
                Next::Reset(reset) => Ok(reset),
                Next::Item(item) => {
                    items += 1;
                    match Record::parse_in(&item, &mut batch.arena) {
                        Ok(record) => {
                            ring_health.decoded();
                            let verdict =
                                seqs.observe(record.header.cpu, record.header.seq, *ticks);
                            if verdict == SeqVerdict::Duplicate {
                                SyncStats::add(&stats.duplicates, 1);
                            } else {
                                batch.records.push(record);
                            }
                            continue;
                        }
                        Err(bad) => match ring_health.undecodable(bad, item.len(), stats) {
                            Some(fault) => Err(fault),
                            None => continue,
                        },
                    }
                }
            };
            let reset = outcome.unwrap_or_else(|fault| ring.reset(fault));
            ring_health.reset(&reset, stats);
            // what was skipped leaves holes in the producers' sequences that
            // the resync below covers: start counting afresh
            *seqs = SeqTracker::default();
            more = true;
            break;
        }
        if items == MAX_RECORDS_PER_BATCH {
            more = true;
        }
        let records = batch.records.len();
        SyncStats::add(&stats.records, records as u64);
        if records > 0 {
            stats.phases.add(Phase::Ring, started);
            stats.phases.batch(records);
        }
        more
    }

    /// Routes and applies the batch read (as one publish), then re-reads
    /// the keys its records could not say and notes the resyncs they ask.
    pub(super) fn handle(&mut self) -> Result<(), crate::KernelError> {
        let started = Instant::now();
        let batch = &mut self.batch;
        batch.written_ns.clear();
        batch
            .written_ns
            .extend(batch.records.iter().map(|record| record.header.ts_ns));
        let mut reads: Vec<(u32, Bytes, EventSource)> = Vec::new();
        let mut foreign = 0;
        // the records of a batch are mostly of one map: look it up once
        // per run of the same map id, not once per record
        let mut cached: Option<(u32, Option<MappedMap<'_>>)> = None;
        // the map and source of every change, while they are all the same
        let mut uniform: Uniform<'_> = Uniform::None;
        for record in batch.records.drain(..) {
            let map_id = record.header.map_id;
            let map = match cached {
                Some((id, map)) if id == map_id => map,
                _ => {
                    let map = self.maps.get(&map_id).map(|map| MappedMap {
                        name: &map.name,
                        info: &map.info,
                    });
                    cached = Some((map_id, map));
                    map
                }
            };
            match route(record, map) {
                Action::Apply(change) => {
                    uniform.note(map, change.source);
                    batch.changes.push(change);
                }
                Action::ReadKey {
                    map_id,
                    key,
                    source,
                } => reads.push((map_id, key, source)),
                // done by the loop after the drain: a resync drains the ring itself
                Action::Resync { map_id } => {
                    self.pending_resyncs.insert(map_id);
                }
                Action::Foreign => foreign += 1,
            }
        }
        SyncStats::add(&self.stats.foreign_records, foreign);
        let routed = self.stats.phases.add(Phase::Route, started);
        let before = self.writer.store().revision();
        let after = self.writer.apply(batch.changes.drain(..));
        let applied = self.stats.phases.add(Phase::Apply, routed);
        match uniform {
            // each change that took effect took one revision: counted without
            // reading the events back from the change log
            Uniform::One(name, source) => {
                self.stats
                    .count_events(name, source, after.saturating_sub(before), after)
            }
            Uniform::None => {}
            Uniform::Mixed => self
                .stats
                .count_published(&self.writer.store().load(), before),
        }
        let now_ns = crate::sys::monotonic_ns();
        let written_ns = &batch.written_ns;
        self.stats
            .record_lags(written_ns.iter().map(|ts| now_ns.saturating_sub(*ts)));
        if let Some(newest) = written_ns.last() {
            let lag = now_ns.saturating_sub(*newest);
            self.stats
                .last_lag_ns
                .store(lag, std::sync::atomic::Ordering::Relaxed);
        }
        self.stats.phases.add(Phase::Account, applied);
        self.read_keys(reads)
    }
}
