//! One module per `mapsync` subcommand.

pub mod connection_args;
pub mod demo;
pub mod format;
pub mod get;
pub mod list;
pub mod maps;
pub mod output;
pub mod serve;
pub mod status;
pub mod watch;
pub mod watch_limit_args;
