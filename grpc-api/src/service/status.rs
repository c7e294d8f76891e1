//! `Status`: the maps' shapes and fill (from the snapshot), their capture
//! counters and the ingest's health (from the [`StatusSource`] the kernel
//! side fills), and the watches (from [`WatchStats`]).

use std::collections::HashMap;

use mapsync_core::Snapshot;
use mapsync_core::status::{EVENT_SOURCES, IngestStatus, MapCounters};

use super::{MapSyncService, WatchStats, header};
use crate::convert;
use crate::error::RequestError;
use crate::pb;

/// The instance's status now, of the maps `auth`'s caller may read.
pub fn status(
    service: &MapSyncService,
    auth: &super::auth::Authed,
) -> Result<pb::StatusResponse, RequestError> {
    let snapshot = service.ready_snapshot()?;
    let ingest = service.status.as_ref().map(|source| source.ingest_status());
    let mut response = response(&snapshot, ingest.as_ref(), &service.stats);
    response
        .maps
        .retain(|map| map.map.as_ref().is_some_and(|map| auth.may_read(&map.name)));
    Ok(response)
}

/// The response for `snapshot` and the capture side's `ingest` report
/// (`None`: a server fed without a kernel side).
pub fn response(
    snapshot: &Snapshot,
    ingest: Option<&IngestStatus>,
    watches: &WatchStats,
) -> pb::StatusResponse {
    let counters: HashMap<&str, &MapCounters> = ingest
        .map(|ingest| {
            ingest
                .maps
                .iter()
                .map(|map| (map.name.as_str(), map))
                .collect()
        })
        .unwrap_or_default();
    let maps = snapshot
        .maps()
        .map(|(name, view)| {
            let map = convert::map_description(name, view);
            let pressure = if map.max_entries == 0 {
                0.0
            } else {
                map.entries as f64 / f64::from(map.max_entries)
            };
            let counted = counters.get(&**name);
            pb::MapStatus {
                pressure,
                capture_sources: counted
                    .map(|c| c.capture_sources.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                last_change_revision: counted.map_or(0, |c| c.last_change_revision),
                events: EVENT_SOURCES
                    .iter()
                    .map(|source| pb::SourceCount {
                        source: source.as_str().to_owned(),
                        events: counted.map_or(0, |c| c.events_from(*source)),
                    })
                    .collect(),
                resyncs: counted.map_or(0, |c| c.resyncs),
                reconcile_repairs: counted.map_or(0, |c| c.reconcile_repairs),
                poll_interval_seconds: counted
                    .and_then(|c| c.poll_interval)
                    .map_or(0.0, |every| every.as_secs_f64()),
                map: Some(map),
            }
        })
        .collect();
    let log = snapshot.log();
    let seconds = |ns: u64| ns as f64 / 1e9;
    let instance = pb::InstanceStatus {
        epoch: snapshot.epoch().0,
        revision: snapshot.revision(),
        uptime_seconds: ingest.map_or(0.0, |i| i.uptime.as_secs_f64()),
        ring_bytes: ingest.map_or(0, |i| i.ring_bytes),
        ring_used_bytes: ingest.map_or(0, |i| i.ring_used_bytes),
        records_read: ingest.map_or(0, |i| i.records_read),
        records_lost: ingest.map_or(0, |i| i.records_lost),
        records_undecodable: ingest.map_or(0, |i| i.records_undecodable),
        change_log_oldest: log.oldest(),
        change_log_newest: snapshot.revision(),
        change_log_events: log.len() as u64,
        change_log_bytes: log.bytes() as u64,
        watch_streams: watches.streams() as u64,
        watches: watches.watches() as u64,
        ingest_lag_p50_seconds: ingest.and_then(|i| i.ingest_lag.p50_ns).map(seconds),
        ingest_lag_p99_seconds: ingest.and_then(|i| i.ingest_lag.p99_ns).map(seconds),
        ingest_lag_samples: ingest.map_or(0, |i| i.ingest_lag.samples),
        kernel: ingest.is_some(),
    };
    pb::StatusResponse {
        header: header(snapshot, snapshot.revision()),
        instance: Some(instance),
        maps,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use mapsync_core::status::LagPercentiles;
    use mapsync_core::{Change, EventSource, LogLimits, MapInfo, MapKind, Store};

    use super::*;

    #[test]
    fn maps_join_their_counters_and_the_log_span_is_the_snapshots() {
        let (store, mut publisher) = Store::new(LogLimits::default());
        publisher.add_map(
            MapInfo::new("flows", MapKind::Hash, 4, 8, 10),
            Vec::new(),
            0,
        );
        publisher.add_map(
            MapInfo::new("other", MapKind::Array, 4, 8, 0),
            Vec::new(),
            0,
        );
        publisher.set_ready();
        for key in 0u32..3 {
            publisher.apply([Change::put(
                "flows",
                Bytes::copy_from_slice(&key.to_ne_bytes()),
                Bytes::from_static(&[0; 8]),
                EventSource::Trace,
                u64::from(key) + 1,
            )]);
        }
        let mut flows = MapCounters {
            name: "flows".into(),
            capture_sources: vec!["emit", "trace", "poll"],
            poll_interval: Some(Duration::from_millis(250)),
            resyncs: 2,
            last_change_revision: 3,
            ..MapCounters::default()
        };
        flows.events[1] = 3;
        let ingest = IngestStatus {
            ring_bytes: 1 << 20,
            records_read: 3,
            records_lost: 1,
            ingest_lag: LagPercentiles {
                samples: 3,
                p50_ns: Some(2_000),
                p99_ns: Some(9_000),
            },
            maps: vec![flows],
            ..IngestStatus::default()
        };
        let reply = response(&store.snapshot(), Some(&ingest), &WatchStats::default());
        let instance = reply.instance.expect("instance");
        assert_eq!(instance.revision, 3);
        assert_eq!(
            (instance.change_log_oldest, instance.change_log_newest),
            (1, 3)
        );
        assert_eq!(instance.change_log_events, 3);
        assert!(instance.kernel);
        assert_eq!(instance.records_lost, 1);
        assert_eq!(instance.ingest_lag_p99_seconds, Some(9e-6));
        let flows = reply
            .maps
            .iter()
            .find(|m| m.map.as_ref().is_some_and(|d| d.name == "flows"))
            .expect("flows");
        assert!((flows.pressure - 0.3).abs() < 1e-9);
        assert_eq!(flows.capture_sources, ["emit", "trace", "poll"]);
        assert_eq!(flows.poll_interval_seconds, 0.25);
        assert_eq!(flows.resyncs, 2);
        assert_eq!(flows.last_change_revision, 3);
        let trace = flows
            .events
            .iter()
            .find(|c| c.source == "trace")
            .expect("trace");
        assert_eq!(trace.events, 3);
        assert_eq!(flows.events.len(), EVENT_SOURCES.len());
        // a map the kernel side does not report, and max_entries 0
        let other = reply
            .maps
            .iter()
            .find(|m| m.map.as_ref().is_some_and(|d| d.name == "other"))
            .expect("other");
        assert_eq!(other.pressure, 0.0);
        assert!(other.capture_sources.is_empty());
        // without a kernel side: the snapshot's part only
        let bare = response(&store.snapshot(), None, &WatchStats::default());
        let instance = bare.instance.expect("instance");
        assert!(!instance.kernel);
        assert_eq!(instance.ingest_lag_p50_seconds, None);
        assert_eq!(instance.revision, 3);
    }
}
