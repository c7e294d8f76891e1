//! `mapsync maps`: the mirrored maps, one row each (from `Status`).

use clap::Args;
use mapsync_client::MapStatus;

use super::output::{self, ClientArgs};

/// Arguments of `mapsync maps`.
#[derive(Args, Debug)]
pub struct MapsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Prints the maps as a table, or (`--json`) one JSON object per map.
pub async fn run(args: MapsArgs) -> anyhow::Result<()> {
    let status = super::status::fetch(&args.client).await?;
    let mut out = std::io::stdout().lock();
    if args.client.json {
        for map in &status.maps {
            output::emit(&mut out, &super::status::map_json(map).to_string())?;
        }
        return Ok(());
    }
    for line in table(&status.maps) {
        output::emit(&mut out, &line)?;
    }
    Ok(())
}

/// The maps as a table: a header line, then one line per map.
pub fn table(maps: &[MapStatus]) -> Vec<String> {
    let mut rows = vec![
        [
            "MAP",
            "KIND",
            "KEY/VALUE",
            "ENTRIES/MAX",
            "FILL",
            "SOURCES",
            "LAST REV",
            "EVENTS e/t/r/p/a",
            "RESYNCS",
            "REPAIRS",
            "POLL",
            "BTF",
            "VERSION",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for map in maps {
        let d = map.map.clone().unwrap_or_default();
        let events: Vec<String> = map.events.iter().map(|c| c.events.to_string()).collect();
        let version = if d.switchable {
            d.version.to_string()
        } else {
            "-".to_owned()
        };
        rows.push(vec![
            d.name,
            d.kind,
            format!("{}/{}", d.key_size, d.value_size),
            format!("{}/{}", d.entries, d.max_entries),
            format!("{:.1}%", map.pressure * 100.0),
            map.capture_sources.join(","),
            map.last_change_revision.to_string(),
            events.join("/"),
            map.resyncs.to_string(),
            map.reconcile_repairs.to_string(),
            if map.poll_interval_seconds > 0.0 {
                format!("{}s", map.poll_interval_seconds)
            } else {
                "-".to_owned()
            },
            if d.has_btf { "yes" } else { "no" }.to_owned(),
            version,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mapsync_client::{MapStatus, SourceCount};

    use super::*;

    #[test]
    fn one_aligned_row_per_map() {
        let map = MapStatus {
            map: None,
            pressure: 0.5,
            capture_sources: vec!["emit".into(), "trace".into()],
            events: vec![SourceCount {
                source: "trace".into(),
                events: 4,
            }],
            ..MapStatus::default()
        };
        let lines = table(&[map]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("MAP"));
        assert!(lines[1].contains("50.0%"), "{}", lines[1]);
        assert!(lines[1].contains("emit,trace"), "{}", lines[1]);
    }
}
