//! One module per `mapsync` subcommand.

pub mod apply;
pub mod bench;
pub mod connection_args;
pub mod delete;
pub mod demo;
pub mod fleet;
pub mod fleet_report;
pub mod fleet_status;
pub mod fleet_tls;
pub mod format;
pub mod get;
pub mod list;
pub mod maps;
pub mod output;
pub mod put;
pub mod security_args;
pub mod serve;
pub mod serve_config;
pub mod status;
pub mod typed_input;
pub mod watch;
pub mod watch_limit_args;
pub mod write_input;
