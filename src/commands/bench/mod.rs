//! `mapsync bench`: measurements a user can run on their own machine.
//!
//! `mapsync bench strategies` answers "which capture strategy should I
//! use?": it runs emit, syscall trace, atomic switch and polling (10 ms,
//! 100 ms, 1 s) on the same closed-loop write load in one run, each with its
//! own `MapSync`, prints a table (throughput, write -> visible p50/p99, CPU
//! and memory, and a capability matrix measured where cheap) and writes
//! `strategies.svg` and `strategies.json` to `--out`.

mod chart;
mod env;
mod load;
mod measure;
mod probes;
mod report;
mod strategy;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tracing::Instrument;

use strategy::{Plan, Strategy};

/// Arguments of `mapsync bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Compare the capture strategies (emit, trace, switch, polling) on one
    /// write load: a table, `strategies.svg` and `strategies.json` (needs
    /// root, bpffs and bpftool).
    Strategies(StrategiesArgs),
}

/// Arguments of `mapsync bench strategies`.
#[derive(Args, Debug)]
pub struct StrategiesArgs {
    /// Directory for `strategies.svg` and `strategies.json` (created).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Fewer writes: the whole run takes well under 30 s (for CI).
    #[arg(long)]
    pub quick: bool,
}

/// Runs `mapsync bench ...`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        // Ctrl-C drops the run: its scratch pin directory is removed on the way out
        BenchCommand::Strategies(args) => tokio::select! {
            result = strategies(args) => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: no report written"),
        },
    }
}

async fn strategies(args: StrategiesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let plan = Plan::new(args.quick);
    let mut env = env::BenchEnv::create()?;
    // the load's keys exist before any row: polling rows change them in place
    for i in 0..plan.batch {
        env.demo.count(env::demo_source(i), 64, 1)?;
    }
    probes::prepare(&mut env)?;
    load::warm_up(&env).await?;
    let mut rows = Vec::new();
    let mut err = std::io::stderr();
    for (index, strategy) in Strategy::all().into_iter().enumerate() {
        let _ = writeln!(err, "bench strategies: {} ...", strategy.name());
        let span = tracing::info_span!("bench_row", strategy = %strategy.name());
        let row = load::run_row(&mut env, strategy, index as u8, plan)
            .instrument(span)
            .await?;
        rows.push(row);
    }
    drop(env);
    let svg = args.out.join("strategies.svg");
    chart::write_svg(&rows, &svg)
        .with_context(|| format!("cannot write the chart {}", svg.display()))?;
    let json = args.out.join("strategies.json");
    let text = serde_json::to_string_pretty(&report::json(&rows, plan))?;
    std::fs::write(&json, text + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    let mut out = std::io::stdout();
    write!(out, "{}", report::table(&rows, plan))?;
    writeln!(out, "\nwrote {} and {}", svg.display(), json.display())?;
    Ok(())
}
