//! `mapsync fleet status`: every node's reported status (see
//! mapsync-fleet's `status` module), as a table or JSON.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use mapsync_fleet::FleetStatus;

/// What `fleet status` reads and how it prints it.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The status prefix the nodes report under (`serve --fleet-status-prefix`).
    #[arg(long, value_name = "PREFIX", default_value = mapsync_fleet::DEFAULT_STATUS_PREFIX)]
    pub status_prefix: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Reads and prints the fleet's status.
pub async fn run(
    client: &mut etcd_client::Client,
    prefix: Option<&str>,
    args: &StatusArgs,
) -> anyhow::Result<()> {
    let status = mapsync_fleet::fleet_status(client, &args.status_prefix, prefix)
        .await
        .context("reading the fleet's status from etcd")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &status, &args.status_prefix)?;
    }
    Ok(())
}

fn write_table(
    out: &mut impl Write,
    status: &FleetStatus,
    status_prefix: &str,
) -> std::io::Result<()> {
    for (prefix, last) in &status.prefixes {
        let bound = if last.lower_bound { " (at least)" } else { "" };
        writeln!(
            out,
            "prefix {prefix}: last change at revision {}{bound}",
            last.revision
        )?;
    }
    if status.rows.is_empty() {
        writeln!(out, "no node reports under {status_prefix}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<16} {:<5} {:>10} {:>8} {:>10} {:>8} {:>8}  PREFIX",
        "NODE", "MAP", "STATE", "APPLIED", "BEHIND", "REVISION", "BAD_KEYS", "REVERTED"
    )?;
    for row in &status.rows {
        // a gone node's values are what it wrote when it started
        let state = if row.live { "live" } else { "gone" };
        let behind = row.behind.map_or_else(|| "-".to_owned(), |b| b.to_string());
        writeln!(
            out,
            "{:<20} {:<16} {:<5} {:>10} {:>8} {:>10} {:>8} {:>8}  {}",
            row.node,
            row.status.map,
            state,
            row.status.applied_revision,
            behind,
            row.mapsync_revision,
            row.status.bad_keys,
            row.status.reverted,
            row.status.prefix
        )?;
    }
    for key in &status.unreadable {
        writeln!(out, "unreadable status value at {key}")?;
    }
    Ok(())
}
