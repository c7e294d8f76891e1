//! The report of `bench strategies`: the table on stdout and the same
//! figures as JSON (`strategies.json`), which the chart and tests read.

use std::fmt::Write;

use serde_json::{Value, json};

use super::load::RowResult;
use super::strategy::Plan;

/// How each figure is measured, printed under the table and kept in the JSON.
pub const METHOD: &str = "closed loop: each round writes BATCH distinct keys, then waits until every \
write is visible in the mirror with the strategy's own source; latency = CLOCK_MONOTONIC from just \
before a write starts to when a reader woken by the store's revision watch loads the snapshot holding \
it (switch: from the Apply's start, one per batch); throughput = writes / wall time of the load, 0 if \
any write was not seen; CPU = getrusage(RUSAGE_SELF) user+system delta of the whole process (writer, \
kernel work in its syscalls, ingest, observer) and, apart, the ingest thread's schedstat runtime delta, \
per million writes; memory = VmRSS after the load minus before the row's MapSync started (after one warm-up \
MapSync; the allocator may hand memory back, so small or negative deltas are noise)";

/// The report as a table, with the matrix and its footnotes.
pub fn table(rows: &[RowResult], plan: Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:>8} {:>5} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "strategy",
        "writes",
        "lost",
        "writes/s",
        "p50",
        "p99",
        "cpu s/1M",
        "ingest s/1M",
        "rss KiB"
    );
    for row in rows {
        let (cpu, ingest) = row.cpu_per_million();
        let _ = writeln!(
            out,
            "{:<11} {:>8} {:>5} {:>12.0} {:>10} {:>10} {:>12.2} {:>12.2} {:>9}",
            row.strategy.name(),
            row.writes,
            row.lost,
            row.throughput(),
            duration(row.latency_us(0.5)),
            duration(row.latency_us(0.99)),
            cpu,
            ingest,
            row.rss_delta_kib
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<11} {:>10} {:>13} {:>14} {:>11} {:>12}",
        "sees:", "in-place", "LRU eviction", "other process", "atomic set", "every write"
    );
    let mut notes: Vec<String> = Vec::new();
    for row in rows {
        let mut line = format!("{:<11}", row.strategy.name());
        for (width, (_, cell)) in [10, 13, 14, 11, 12]
            .into_iter()
            .zip(row.capabilities.cells())
        {
            let mut text = if cell.seen { "yes" } else { "no" }.to_string();
            if !cell.measured {
                let n = match notes.iter().position(|note| *note == cell.detail) {
                    Some(i) => i + 1,
                    None => {
                        notes.push(cell.detail.clone());
                        notes.len()
                    }
                };
                let _ = write!(text, "[{n}]");
            }
            let _ = write!(line, " {text:>width$}");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\nmatrix: measured in this run unless marked [n] (by construction):"
    );
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(out, "  [{}] {note}", i + 1);
    }
    let _ = writeln!(out, "\nload per row:");
    for row in rows {
        let _ = writeln!(
            out,
            "  {:<11} {} rounds of {}: {}",
            row.strategy.name(),
            row.writes / u64::from(plan.batch),
            plan.batch,
            row.strategy.writer()
        );
    }
    let _ = writeln!(
        out,
        "\nmethod: {}",
        METHOD.replace("BATCH", &plan.batch.to_string())
    );
    out
}

/// A latency in microseconds as `12us`, `3.4ms` or `1.02s`.
pub fn duration(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.0}us")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// The report as JSON.
pub fn json(rows: &[RowResult], plan: Plan) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            let (cpu, ingest) = row.cpu_per_million();
            let capabilities: serde_json::Map<String, Value> = row
                .capabilities
                .cells()
                .into_iter()
                .map(|(name, cell)| {
                    let value = json!({
                        "seen": cell.seen,
                        "measured": cell.measured,
                        "detail": cell.detail,
                    });
                    (name.to_string(), value)
                })
                .collect();
            json!({
                "strategy": row.strategy.name(),
                "poll_ms": row.strategy.poll().map(|every| every.as_millis() as u64),
                "writer": row.strategy.writer(),
                "writes": row.writes,
                "lost": row.lost,
                "elapsed_s": row.elapsed_s,
                "throughput_per_s": row.throughput(),
                "p50_us": row.latency_us(0.5),
                "p99_us": row.latency_us(0.99),
                "max_us": row.latency_us(1.0),
                "cpu_process_s_per_million": cpu,
                "cpu_ingest_s_per_million": ingest,
                "rss_delta_kib": row.rss_delta_kib,
                "capabilities": capabilities,
            })
        })
        .collect();
    json!({
        "quick": plan.quick,
        "batch": plan.batch,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "method": METHOD.replace("BATCH", &plan.batch.to_string()),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(duration(12.4), "12us");
        assert_eq!(duration(3_400.0), "3.4ms");
        assert_eq!(duration(1_020_000.0), "1.02s");
    }
}
