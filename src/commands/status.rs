//! `mapsync status`: how the instance is doing (its `Status`), as a table
//! or (`--json`) one JSON object.

use clap::Args;
use mapsync_client::{InstanceStatus, MapStatus, StatusResponse};
use serde_json::{Value, json};

use super::output::{self, ClientArgs};

/// Arguments of `mapsync status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Asks the server for its status and prints it.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let status = fetch(&args.client).await?;
    let mut out = std::io::stdout().lock();
    if args.client.json {
        return output::emit(&mut out, &status_json(&status).to_string());
    }
    for line in instance_lines(
        status
            .instance
            .as_ref()
            .unwrap_or(&InstanceStatus::default()),
    ) {
        output::emit(&mut out, &line)?;
    }
    output::emit(&mut out, "")?;
    for line in super::maps::table(&status.maps) {
        output::emit(&mut out, &line)?;
    }
    Ok(())
}

/// The server's `Status`, within `--timeout`.
pub async fn fetch(client: &ClientArgs) -> anyhow::Result<StatusResponse> {
    client
        .within(async {
            let mut connection = client.connect(None).await?;
            Ok(connection.status().await?)
        })
        .await
}

fn seconds_text(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1e-3 => format!("{:.1} us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.2} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
    }
}

/// The instance part, one `name: value` line each.
pub fn instance_lines(i: &InstanceStatus) -> Vec<String> {
    let fill = if i.ring_bytes == 0 {
        0.0
    } else {
        100.0 * i.ring_used_bytes as f64 / i.ring_bytes as f64
    };
    vec![
        format!("epoch:        {:016x}", i.epoch),
        format!("revision:     {}", i.revision),
        format!("uptime:       {:.0} s", i.uptime_seconds),
        format!(
            "ring:         {} of {} bytes queued ({fill:.1}%)",
            i.ring_used_bytes, i.ring_bytes
        ),
        format!(
            "records:      {} read, {} lost, {} undecodable",
            i.records_read, i.records_lost, i.records_undecodable
        ),
        format!(
            "change log:   revisions {}..{}, {} events, {} bytes",
            i.change_log_oldest, i.change_log_newest, i.change_log_events, i.change_log_bytes
        ),
        format!("watches:      {} on {} streams", i.watches, i.watch_streams),
        format!(
            "ingest lag:   p50 {}, p99 {} ({} records, last minute)",
            seconds_text(i.ingest_lag_p50_seconds),
            seconds_text(i.ingest_lag_p99_seconds),
            i.ingest_lag_samples
        ),
    ]
}

/// One map's status as a JSON object.
pub fn map_json(map: &MapStatus) -> Value {
    let d = map.map.clone().unwrap_or_default();
    let events: serde_json::Map<String, Value> = map
        .events
        .iter()
        .map(|c| (c.source.clone(), json!(c.events)))
        .collect();
    json!({
        "name": d.name, "id": d.id, "kind": d.kind, "key_size": d.key_size,
        "value_size": d.value_size, "entries": d.entries, "max_entries": d.max_entries,
        "pressure": map.pressure, "btf": d.has_btf, "switchable": d.switchable,
        "version": d.version, "capture_sources": map.capture_sources,
        "last_change_revision": map.last_change_revision, "events": events,
        "resyncs": map.resyncs, "reconcile_repairs": map.reconcile_repairs,
        "poll_interval_seconds": map.poll_interval_seconds,
    })
}

/// The whole status as one JSON object.
pub fn status_json(status: &StatusResponse) -> Value {
    let i = status.instance.unwrap_or_default();
    json!({
        "instance": {
            "epoch": format!("{:016x}", i.epoch), "revision": i.revision,
            "uptime_seconds": i.uptime_seconds, "ring_bytes": i.ring_bytes,
            "ring_used_bytes": i.ring_used_bytes, "records_read": i.records_read,
            "records_lost": i.records_lost, "records_undecodable": i.records_undecodable,
            "change_log": {"oldest": i.change_log_oldest, "newest": i.change_log_newest,
                "events": i.change_log_events, "bytes": i.change_log_bytes},
            "watch_streams": i.watch_streams, "watches": i.watches,
            "ingest_lag_p50_seconds": i.ingest_lag_p50_seconds,
            "ingest_lag_p99_seconds": i.ingest_lag_p99_seconds,
            "ingest_lag_samples": i.ingest_lag_samples,
        },
        "maps": status.maps.iter().map(map_json).collect::<Vec<_>>(),
    })
}
