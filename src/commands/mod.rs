//! One module per `mapsync` subcommand.

pub mod connection_args;
pub mod demo;
pub mod fleet;
pub mod format;
pub mod get;
pub mod list;
pub mod output;
pub mod serve;
pub mod watch;
pub mod watch_limit_args;
