//! `mapsync`: the sidecar daemon (`serve`), the demo (`demo`), and a CLI for
//! humans (`list`, `get`, `watch`) and writes (`put`, `delete`, `apply`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod metrics;
mod metrics_auth;
mod otlp;

/// Live user-space mirrors of BPF maps, with an ordered, resumable change stream over gRPC.
#[derive(Parser, Debug)]
#[command(name = "mapsync", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mirror BPF maps and serve them over gRPC (the sidecar).
    Serve(Box<commands::serve::ServeArgs>),
    /// Load a demo BPF program, mirror its map, and show its changes live.
    Demo(commands::demo::DemoArgs),
    /// Print every entry of a map at one revision.
    List(commands::list::ListArgs),
    /// Print the value of one key.
    Get(commands::get::GetArgs),
    /// Print changes to maps as they happen.
    Watch(commands::watch::WatchArgs),
    /// Write one key; prints the revision at which it is visible.
    Put(commands::put::PutArgs),
    /// Remove one key; prints the revision at which it is visible.
    Delete(commands::delete::DeleteArgs),
    /// Replace (or merge into) a switchable map's whole set in one atomic
    /// switch; prints the version and revision.
    Apply(commands::apply::ApplyArgs),
    /// Show how the sidecar is doing: its ingest, change log, watches and maps.
    Status(commands::status::StatusArgs),
    /// List the mirrored maps with their fill, sources and counters.
    Maps(commands::maps::MapsArgs),
    /// Write map entries into etcd in the layout `serve --follow` applies.
    Fleet(commands::fleet::FleetArgs),
    /// Measure on this machine: `bench strategies` compares the capture strategies.
    Bench(commands::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // serve: its config file first (it may name the OTLP endpoint)
    let command = match cli.command {
        Command::Serve(args) => match commands::serve_config::resolve(*args) {
            Ok(Some(args)) => Command::Serve(Box::new(args)),
            Ok(None) => return ExitCode::SUCCESS, // --print-config
            Err(error) => return fail(&error),
        },
        command => command,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let otlp_endpoint = match &command {
        Command::Serve(args) => args.otlp_endpoint.as_deref(),
        _ => None,
    };
    let exporter = match otlp::Exporter::start(otlp_endpoint, &runtime) {
        Ok(exporter) => exporter,
        Err(error) => return fail(&error),
    };
    init_logging(&command, &exporter);
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) => commands::serve::run(*args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::List(args) => commands::list::run(args).await,
            Command::Get(args) => commands::get::run(args).await,
            Command::Watch(args) => commands::watch::run(args).await,
            Command::Put(args) => commands::put::run(args).await,
            Command::Delete(args) => commands::delete::run(args).await,
            Command::Apply(args) => commands::apply::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Maps(args) => commands::maps::run(args).await,
            Command::Fleet(args) => commands::fleet::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
        }
    });
    exporter.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// Says `error` on one line and fails.
fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(error));
    ExitCode::FAILURE
}

/// Logs to stderr (`MAPSYNC_LOG` filters), and hands spans to the OTLP
/// exporter when there is one (the same filter applies).
fn init_logging(command: &Command, exporter: &otlp::Exporter) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAPSYNC_LOG").unwrap_or_else(|_| {
        let default = match command {
            Command::Serve(_) => "info",
            // a watch says when it lost the server and reconnects
            Command::Watch(_) => "warn,mapsync_client=info",
            _ => "warn",
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // colours only for a person at a terminal, never into a file or journal
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        );
    tracing_subscriber::registry()
        .with(filter)
        .with(log)
        .with(exporter.layer())
        .init();
}

/// An error and its causes on one line, `outer: cause: cause`, each cause
/// said once: a cause whose text the line already holds (because a message
/// embeds its source, as many foreign errors do) is skipped.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.replace('\n', " ")
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let os = std::io::Error::from_raw_os_error(2);
        let error = anyhow::Error::new(std::io::Error::new(os.kind(), os.to_string()))
            .context(format!("cannot reach mapsync at unix:/x: {os}"));
        assert_eq!(
            one_line(&error),
            "cannot reach mapsync at unix:/x: No such file or directory (os error 2)"
        );
        let error = anyhow::anyhow!("Address already in use (os error 98)")
            .context("cannot listen on 127.0.0.1:1")
            .context("cannot listen on 127.0.0.1:1");
        assert_eq!(
            one_line(&error),
            "cannot listen on 127.0.0.1:1: Address already in use (os error 98)"
        );
    }
}
