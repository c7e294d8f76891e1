//! `mapsync`: the sidecar daemon (`serve`), the demo (`demo`), and a CLI for
//! humans (`list`, `get`, `watch`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod metrics;

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
    Serve(commands::serve::ServeArgs),
    /// Load a demo BPF program, mirror its map, and show its changes live.
    Demo(commands::demo::DemoArgs),
    /// Print every entry of a map at one revision.
    List(commands::list::ListArgs),
    /// Print the value of one key.
    Get(commands::get::GetArgs),
    /// Print changes to maps as they happen.
    Watch(commands::watch::WatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAPSYNC_LOG").unwrap_or_else(|_| {
                let default = if matches!(cli.command, Command::Serve(_)) {
                    "info"
                } else {
                    "warn"
                };
                tracing_subscriber::EnvFilter::new(default)
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::List(args) => commands::list::run(args).await,
            Command::Get(args) => commands::get::run(args).await,
            Command::Watch(args) => commands::watch::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
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
