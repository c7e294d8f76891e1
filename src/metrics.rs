//! Prometheus metrics of a running sidecar, read from the live counters at
//! each scrape and served over HTTP at `/metrics`.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use mapsync_core::Store;
use mapsync_core::status::{EVENT_SOURCES, IngestStatus, StatusSource};
use mapsync_grpc::service::WatchStats;
use mapsync_kernel::{HistogramSnapshot, MapSync, SyncStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Reads the store and the ingest counters at scrape time.
#[derive(Debug)]
pub struct SyncCollector {
    store: Store,
    stats: Arc<SyncStats>,
    watch: Arc<WatchStats>,
    /// The gRPC server's authorizer, for its refusal counts.
    authz: Option<Arc<mapsync_grpc::authz::Authorizer>>,
    /// Each followed map's fleet follower counters (empty: no `--follow`).
    fleet: Vec<(String, Arc<mapsync_fleet::FollowStats>)>,
}

impl SyncCollector {
    /// A collector over a running sync and the gRPC server's watch counts.
    pub fn new(sync: &MapSync, watch: Arc<WatchStats>) -> Self {
        Self {
            store: sync.store().clone(),
            stats: sync.stats_handle(),
            watch,
            authz: None,
            fleet: Vec::new(),
        }
    }

    /// The same collector also reporting `authz`'s refusals
    /// (`mapsync_auth_refusals_total{reason}`).
    pub fn with_authz(mut self, authz: Arc<mapsync_grpc::authz::Authorizer>) -> Self {
        self.authz = Some(authz);
        self
    }

    /// The same collector also reporting the fleet followers of these maps
    /// (`mapsync_fleet_bad_keys_total{map}`).
    pub fn with_fleet(mut self, fleet: Vec<(String, Arc<mapsync_fleet::FollowStats>)>) -> Self {
        self.fleet = fleet;
        self
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for SyncCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.stats.snapshot();
        let snapshot = self.store.load();
        let e = &mut encoder;
        counter(
            e,
            "mapsync_records",
            "Change records read from the ring buffer.",
            stats.records,
        )?;
        counter(
            e,
            "mapsync_revisions",
            "Changes applied to the mirror (the newest revision).",
            snapshot.revision(),
        )?;
        counter(
            e,
            "mapsync_dropped_records",
            "Records the kernel could not queue (ring full).",
            stats.drops,
        )?;
        counter(
            e,
            "mapsync_sequence_gaps",
            "Records found missing from per-CPU sequence numbers.",
            stats.seq_gaps,
        )?;
        counter(
            e,
            "mapsync_duplicate_records",
            "Records seen twice and dropped.",
            stats.duplicates,
        )?;
        counter(
            e,
            "mapsync_resyncs",
            "Map resyncs after lost or ambiguous records.",
            stats.resyncs,
        )?;
        counter(
            e,
            "mapsync_reconciles",
            "Periodic reconciles made.",
            stats.reconciles,
        )?;
        counter(
            e,
            "mapsync_reconcile_repairs",
            "Differences reconciles found between kernel and mirror (0 when every writer is captured).",
            stats.reconcile_repairs,
        )?;
        counter(
            e,
            "mapsync_polled_changes",
            "Changes found by the poll source.",
            stats.polled_changes,
        )?;
        counter(
            e,
            "mapsync_bad_records",
            "Ring records that could not be decoded.",
            stats.bad_records,
        )?;
        counter(
            e,
            "mapsync_ring_resets",
            "Times the ring's consumer position was impossible and was moved to the producer's (every map resynced).",
            stats.ring_resets,
        )?;
        let lag = ConstGauge::new(stats.last_lag_ns as f64 / 1e9);
        lag.encode(e.encode_descriptor(
            "mapsync_lag_seconds",
            "Kernel write to mirror publish, newest record.",
            None,
            lag.metric_type(),
        )?)?;
        gauge(
            e,
            "mapsync_subscribers",
            "Live subscriptions (in-process and gRPC watches).",
            self.store.subscribers() as i64,
        )?;
        gauge(
            e,
            "mapsync_change_log_events",
            "Changes held in the change log.",
            snapshot.log().len() as i64,
        )?;
        gauge(
            e,
            "mapsync_change_log_bytes",
            "Bytes held in the change log.",
            snapshot.log().bytes() as i64,
        )?;
        gauge(
            e,
            "mapsync_watch_streams",
            "Open gRPC Watch streams.",
            self.watch.streams() as i64,
        )?;
        gauge(
            e,
            "mapsync_watches",
            "Open watches over all gRPC Watch streams.",
            self.watch.watches() as i64,
        )?;
        gauge(
            e,
            "mapsync_watch_queued_messages",
            "Watch messages queued for clients and not yet sent (bounded per stream).",
            self.watch.queued_messages() as i64,
        )?;
        gauge(
            e,
            "mapsync_watch_queued_bytes",
            "Encoded bytes of watch messages prepared for clients and not yet sent (the memory budget's count).",
            self.watch.queued_bytes() as i64,
        )?;
        counter(
            e,
            "mapsync_refused_writes",
            "Write requests refused with PERMISSION_DENIED (the caller may not write).",
            self.watch.refused_writes(),
        )?;
        if let Some(authz) = &self.authz {
            auth_refusals(e, authz.refusals())?;
        }
        per_map(e, &snapshot, &self.stats.ingest_status())?;
        fleet(e, &self.fleet)?;
        propagation(e, &self.stats.propagation(), &self.watch.send_propagation())?;
        let info = prometheus_client::metrics::info::Info::new(vec![(
            "version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )]);
        info.encode(e.encode_descriptor(
            "mapsync_build",
            "The mapsync build running (value 1).",
            None,
            info.metric_type(),
        )?)?;
        let entries: usize = snapshot.maps().map(|(_, map)| map.len()).sum();
        gauge(
            e,
            "mapsync_mirrored_entries",
            "Entries in all mirrored maps.",
            entries as i64,
        )?;
        Ok(())
    }
}

/// `mapsync_propagation_seconds`: kernel write -> mirror publish (one
/// sample per ring record) and mirror publish -> watch message queued (one
/// sample per live event sent to a watch).
fn propagation(
    e: &mut DescriptorEncoder,
    kernel_to_mirror: &HistogramSnapshot,
    mirror_to_watch: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(
        "mapsync_propagation_seconds",
        "Propagation of changes: path kernel_to_mirror is a kernel write's record timestamp to its publish in the mirror; path mirror_to_watch is a publish to its event queued on a watch stream.",
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    for (path, histogram) in [
        ("kernel_to_mirror", kernel_to_mirror),
        ("mirror_to_watch", mirror_to_watch),
    ] {
        let labels = vec![("path".to_owned(), path.to_owned())];
        family
            .encode_family(&labels)?
            .encode_histogram::<Vec<(String, String)>>(
                histogram.sum_seconds,
                histogram.count,
                &histogram.buckets,
                None,
            )?;
    }
    Ok(())
}

/// The per-map families, labelled by map name only.
fn per_map(
    e: &mut DescriptorEncoder,
    snapshot: &mapsync_core::Snapshot,
    ingest: &IngestStatus,
) -> Result<(), std::fmt::Error> {
    let label = |name: &str| vec![("map".to_owned(), name.to_owned())];
    let mut family = e.encode_descriptor(
        "mapsync_map_entries",
        "Entries in the map's mirror.",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (name, view) in snapshot.maps() {
        ConstGauge::new(view.len() as i64).encode(family.encode_family(&label(name))?)?;
    }
    let mut family = e.encode_descriptor(
        "mapsync_map_pressure",
        "Entries over max entries (0 to 1).",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (name, view) in snapshot.maps() {
        let max = view.info().max_entries;
        let ratio = if max == 0 {
            0.0
        } else {
            view.len() as f64 / f64::from(max)
        };
        ConstGauge::new(ratio).encode(family.encode_family(&label(name))?)?;
    }
    // one family per source, so that the map is the only label
    for source in &EVENT_SOURCES {
        let name = format!("mapsync_map_{}_events", source.as_str());
        let help = format!(
            "Events applied to the map's mirror that the {} source saw.",
            source.as_str()
        );
        let mut family = e.encode_descriptor(
            &name,
            &help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for map in &ingest.maps {
            ConstCounter::new(map.events_from(*source))
                .encode(family.encode_family(&label(&map.name))?)?;
        }
    }
    let mut family = e.encode_descriptor(
        "mapsync_map_resyncs",
        "Full re-reads of the map after lost or ambiguous records.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for map in &ingest.maps {
        ConstCounter::new(map.resyncs).encode(family.encode_family(&label(&map.name))?)?;
    }
    let mut family = e.encode_descriptor(
        "mapsync_map_reconcile_repairs",
        "Differences the periodic reconcile found in the map and repaired.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for map in &ingest.maps {
        ConstCounter::new(map.reconcile_repairs)
            .encode(family.encode_family(&label(&map.name))?)?;
    }
    Ok(())
}

/// The fleet followers' family, labelled by the followed map; present
/// (without samples) when nothing is followed.
fn fleet(
    e: &mut DescriptorEncoder,
    followers: &[(String, Arc<mapsync_fleet::FollowStats>)],
) -> Result<(), std::fmt::Error> {
    let label = |name: &str| vec![("map".to_owned(), name.to_owned())];
    let mut family = e.encode_descriptor(
        "mapsync_fleet_bad_keys",
        "Distinct etcd keys under the followed prefix that do not decode for the map (skipped).",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (map, stats) in followers {
        ConstCounter::new(stats.undecodable()).encode(family.encode_family(&label(map))?)?;
    }
    Ok(())
}

/// `mapsync_auth_refusals_total{reason}`: requests refused by authentication
/// (`unauthenticated`) and authorization (`permission_denied`).
fn auth_refusals(
    e: &mut DescriptorEncoder,
    refusals: &mapsync_grpc::authz::Refusals,
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(
        "mapsync_auth_refusals",
        "Requests and watches refused: unauthenticated (unknown caller) or permission_denied (a map the caller may not read or write).",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (reason, count) in [
        ("unauthenticated", refusals.unauthenticated()),
        ("permission_denied", refusals.permission_denied()),
    ] {
        let labels = vec![("reason".to_owned(), reason.to_owned())];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The metrics text for `registry`.
pub fn render(registry: &Registry) -> anyhow::Result<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).context("encoding metrics")?;
    Ok(text)
}

/// The `GET /metrics` route over `collector`.
pub fn router(collector: SyncCollector) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry))
}

async fn scrape(
    State(registry): State<Arc<Registry>>,
) -> Result<impl axum::response::IntoResponse, (axum::http::StatusCode, String)> {
    let text = render(&registry)
        .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
