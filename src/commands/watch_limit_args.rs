//! `mapsync serve`'s watch and read limits: every bound of the service
//! (`mapsync_grpc::service::Limits`), with its default shown in `--help`.

use std::time::Duration;

use clap::Args;
use mapsync_grpc::service::Limits;

/// The watch and read limits of `mapsync serve`.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Watch and read limits")]
pub struct WatchLimitArgs {
    /// Most watches open at once on one Watch stream; a create beyond it is
    /// refused (RESOURCE_EXHAUSTED) and the stream goes on.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_watches_per_stream)]
    pub max_watches_per_stream: usize,
    /// Most watches open at once on the whole server (all streams).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_watches)]
    pub max_watches: usize,
    /// Messages queued per Watch stream between its watches and the transport.
    #[arg(long, value_name = "N", default_value_t = Limits::default().stream_buffer, value_parser = at_least_one)]
    pub watch_stream_buffer: usize,
    /// Byte cap of one watch message (a larger batch of events is split; one
    /// event larger than the cap travels alone).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub watch_message_bytes: usize,
    /// Most bytes of watch messages prepared for one stream's client and not
    /// yet sent; a watch beyond it waits.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().stream_budget_bytes)]
    pub watch_stream_budget: usize,
    /// Most bytes of watch messages prepared for all clients together and not
    /// yet sent; beyond it each stream sends one message at a time.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().server_budget_bytes)]
    pub watch_server_budget: usize,
    /// Cancel a watch with SLOW_CONSUMER once its client has taken nothing
    /// for this long while the watch had messages to send (the client
    /// resumes from the revision it names).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().slow_consumer_timeout.as_secs_f64(), value_parser = positive_seconds)]
    pub slow_consumer_timeout: f64,
    /// Shortest progress interval a watch may ask for (shorter ones are
    /// raised to it).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().min_progress_interval.as_secs_f64(), value_parser = positive_seconds)]
    pub min_progress_interval: f64,
    /// Largest request message accepted on any call; a larger one is
    /// RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_request_bytes)]
    pub max_request_bytes: usize,
    /// Byte cap of one List page (a page also stops at its entry count).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_list_page_bytes)]
    pub list_page_bytes: usize,
    /// Longest a Get or List waits for its min_revision, whatever its
    /// deadline (then UNAVAILABLE).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().max_min_revision_wait.as_secs_f64(), value_parser = positive_seconds)]
    pub max_min_revision_wait: f64,
}

impl WatchLimitArgs {
    /// The service limits these arguments set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_watches_per_stream: self.max_watches_per_stream,
            max_watches: self.max_watches,
            stream_buffer: self.watch_stream_buffer,
            max_message_bytes: self.watch_message_bytes,
            stream_budget_bytes: self.watch_stream_budget,
            server_budget_bytes: self.watch_server_budget,
            slow_consumer_timeout: Duration::from_secs_f64(self.slow_consumer_timeout),
            min_progress_interval: Duration::from_secs_f64(self.min_progress_interval),
            max_request_bytes: self.max_request_bytes,
            max_list_page_bytes: self.list_page_bytes,
            max_min_revision_wait: Duration::from_secs_f64(self.max_min_revision_wait),
        }
    }
}

fn at_least_one(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{arg}` is not a whole number")),
    }
}

fn positive_seconds(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        Ok(_) => Err(format!("`{arg}` is not a positive number of seconds")),
        Err(_) => Err(format!("`{arg}` is not a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: WatchLimitArgs,
    }

    #[test]
    fn defaults_are_the_service_defaults_and_every_flag_sets_its_limit() {
        let defaults = Cli::parse_from(["serve"]).limits.limits();
        assert_eq!(format!("{defaults:?}"), format!("{:?}", Limits::default()));
        let set = Cli::parse_from([
            "serve",
            "--max-watches-per-stream=7",
            "--max-watches=8",
            "--watch-stream-buffer=9",
            "--watch-message-bytes=10",
            "--watch-stream-budget=11",
            "--watch-server-budget=12",
            "--slow-consumer-timeout=1.5",
            "--min-progress-interval=0.25",
            "--max-request-bytes=13",
            "--list-page-bytes=14",
            "--max-min-revision-wait=2",
        ])
        .limits
        .limits();
        assert_eq!(set.max_watches_per_stream, 7);
        assert_eq!(set.max_watches, 8);
        assert_eq!(set.stream_buffer, 9);
        assert_eq!(set.max_message_bytes, 10);
        assert_eq!(set.stream_budget_bytes, 11);
        assert_eq!(set.server_budget_bytes, 12);
        assert_eq!(set.slow_consumer_timeout, Duration::from_millis(1500));
        assert_eq!(set.min_progress_interval, Duration::from_millis(250));
        assert_eq!(set.max_request_bytes, 13);
        assert_eq!(set.max_list_page_bytes, 14);
        assert_eq!(set.max_min_revision_wait, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let error = Cli::try_parse_from(["serve", "--slow-consumer-timeout=0"])
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("not a positive number"),
            "{error}"
        );
        let error = Cli::try_parse_from(["serve", "--watch-stream-buffer=0"])
            .err()
            .expect("refused");
        assert!(error.to_string().contains("watch-stream-buffer"), "{error}");
    }
}
