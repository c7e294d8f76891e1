//! `mapsync serve`: the sidecar. Mirrors the given maps and serves the gRPC API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mapsync_core::LogLimits;
use mapsync_core::MapKind;
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::service::WatchStats;
use mapsync_kernel::{DEFAULT_PIN_DIR, MapSpec, MapSync, SwitchShape, SyncConfig};

/// Default address of the sidecar's gRPC API.
pub const DEFAULT_LISTEN: &str = "unix:/run/mapsync/mapsync.sock";

/// Arguments of `mapsync serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Read the flags from a TOML file first (keys named after the flags,
    /// `[[map]]` and `[[follow]]` tables); flags given here override it.
    /// See ARCHITECTURE.md, "Config file".
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file, environment, flags and
    /// defaults) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Export tracing spans (per write, resync, watch, ...) to this OTLP/gRPC
    /// collector, e.g. http://127.0.0.1:4317 (needs a build with the `otlp`
    /// feature).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Where to serve the gRPC API: HOST:PORT or unix:PATH.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "MAPSYNC_LISTEN")]
    pub listen: String,
    /// A pinned map to mirror, as [NAME=]PIN_PATH; NAME defaults to the pin's
    /// file name. Repeat for several maps.
    #[arg(long = "map", value_name = "[NAME=]PIN_PATH")]
    pub maps: Vec<String>,
    /// A map to mirror by kernel id, as [NAME=]ID; NAME defaults to the
    /// kernel's name of the map. Repeat for several maps.
    #[arg(long = "map-id", value_name = "[NAME=]ID")]
    pub map_ids: Vec<String>,
    /// bpffs directory of the shared capture maps (ring, drop and sequence
    /// counters). BPF programs that include mapsync.h and are loaded with
    /// this pin root share mapsync's ring.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Size of the capture ring buffer in bytes, when mapsync creates it: a
    /// power-of-two multiple of the page size.
    #[arg(long, default_value_t = mapsync_ebpf::abi::RINGBUF_BYTES, value_parser = parse_ring_bytes)]
    pub ringbuf_bytes: u32,
    /// Compare every map with the kernel this often, in seconds, and repair
    /// (and count) any difference; 0 turns it off.
    #[arg(long, value_name = "SECS", default_value_t = mapsync_kernel::DEFAULT_RECONCILE_INTERVAL.as_secs_f64())]
    pub reconcile_interval: f64,
    /// Poll a map every SECS seconds, as NAME=SECS: the source that sees values
    /// changed in place through lookup pointers (counters) and LRU evictions.
    #[arg(long = "poll", value_name = "NAME=SECS")]
    pub polls: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT; off by default).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Most changes kept in the change log for resuming watches.
    #[arg(long, default_value_t = LogLimits::default().max_events)]
    pub log_events: usize,
    /// Most bytes of keys and values kept in the change log.
    #[arg(long, default_value_t = LogLimits::default().max_bytes)]
    pub log_bytes: usize,
    // ---- switchable maps (--switch, --switch-create): ARCHITECTURE.md,
    // "Switchable maps and Apply" ----
    /// A switchable map to mirror and write with Apply, as
    /// [NAME=]OUTER_PIN: an array_of_maps whose slot 0 holds the active inner
    /// map (hash, array, percpu_hash or percpu_array). mapsync creates the
    /// shadow inner map, and the version store at OUTER_PIN_version if
    /// missing. Repeat for several maps.
    #[arg(long = "switch", value_name = "[NAME=]OUTER_PIN")]
    pub switches: Vec<String>,
    /// Create a switchable map if PIN does not exist yet (the outer map at
    /// PIN, its version store at PIN_version), then mirror it as --switch
    /// does: NAME=PIN:KIND:KEY:VALUE:MAX, KIND one of hash, array,
    /// percpu_hash, percpu_array, sizes in bytes. An existing set of another
    /// shape is an error.
    #[arg(long = "switch-create", value_name = "[NAME=]PIN:KIND:KEY:VALUE:MAX")]
    pub switch_creates: Vec<String>,
    // ---- end of switchable maps ----
    #[command(flatten)]
    pub connections: super::connection_args::ConnectionArgs,
    #[command(flatten)]
    pub watch_limits: super::watch_limit_args::WatchLimitArgs,
    #[command(flatten)]
    pub write_policy: WritePolicyArgs,
    #[command(flatten)]
    pub security: super::security_args::SecurityArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

// ---- fleet: follow etcd prefixes into maps (mapsync-fleet) -----------------

/// etcd prefixes followed into mirrored maps.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Fleet")]
pub struct FollowArgs {
    /// Follow an etcd prefix into a map (layout `PREFIX/HEXKEY` -> raw
    /// value; see ARCHITECTURE.md, "Fleet"); repeatable.
    #[arg(
        long = "follow",
        value_name = "MAP=etcd[s]://HOST:PORT[,HOST:PORT]/PREFIX"
    )]
    pub follows: Vec<String>,
    /// Seconds between checks of each followed map against etcd (local
    /// writes by others are reverted then).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub follow_reconcile: f64,
    /// A followed map whose local writes win: not reverted by the
    /// reconcile (repeatable).
    #[arg(long, value_name = "MAP")]
    pub follow_local_wins: Vec<String>,
    /// A followed map whose etcd values are typed JSON (encoded through
    /// the map's BTF value type; the map needs BTF): `MAP=json`, or
    /// `MAP=raw` (the default). Repeatable.
    #[arg(long, value_name = "MAP=json|raw")]
    pub follow_format: Vec<String>,
    #[command(flatten)]
    pub report: super::fleet_report::ReportArgs,
}

impl FollowArgs {
    /// The followers' configs, checked.
    pub fn configs(&self) -> anyhow::Result<Vec<mapsync_fleet::FollowConfig>> {
        let every = std::time::Duration::try_from_secs_f64(self.follow_reconcile)
            .ok()
            .filter(|every| !every.is_zero())
            .context("--follow-reconcile must be a number of seconds above 0")?;
        self.report.node()?;
        let mut configs = self
            .follows
            .iter()
            .map(|spec| {
                let mut config = mapsync_fleet::parse_follow(spec)?;
                config.reconcile_every = every;
                config.local_wins = self.follow_local_wins.contains(&config.map);
                Ok(config)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.report.tls.apply(&mut configs)?;
        super::fleet_report::apply_formats(&self.follow_format, &mut configs)?;
        if let Some(map) = self
            .follow_local_wins
            .iter()
            .find(|map| !configs.iter().any(|c| &c.map == *map))
        {
            anyhow::bail!("--follow-local-wins {map}: no --follow names that map");
        }
        Ok(configs)
    }

    /// Starts one follower task per config, each in its own span, and the
    /// status reporter (when following); the maps must be mirrored.
    pub fn spawn(
        configs: Vec<mapsync_fleet::FollowConfig>,
        report: &super::fleet_report::ReportArgs,
        sync: &MapSync,
    ) -> anyhow::Result<super::fleet_report::FleetTasks> {
        use tracing::Instrument;
        let snapshot = sync.store().snapshot();
        let mut reporter = report.reporter(&configs, sync.store())?;
        let mut stats = Vec::new();
        let followers = configs
            .into_iter()
            .map(|config| {
                anyhow::ensure!(
                    snapshot.map(&config.map).is_some(),
                    "--follow: map `{}` is not mirrored (add it with --map)",
                    config.map
                );
                super::fleet_report::check_format(&config, &snapshot)?;
                let span = tracing::info_span!("follow", map = %config.map, prefix = %config.prefix);
                tracing::info!(map = %config.map, endpoints = ?config.endpoints, prefix = %config.prefix, "following etcd");
                let (map, prefix) = (config.map.clone(), config.prefix.clone());
                let follower =
                    mapsync_fleet::Follower::new(config, sync.store().clone(), sync.commands());
                if let Some(reporter) = reporter.as_mut() {
                    reporter.add(&map, &prefix, follower.stats());
                }
                stats.push((map, follower.stats()));
                Ok(tokio::spawn(follower.run().instrument(span)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(super::fleet_report::FleetTasks {
            followers,
            reporter: reporter.map(super::fleet_report::spawn),
            stats,
        })
    }
}

// ---- who may write (Put, Delete, Txn, Apply) --------------------------------

/// Who may call the write RPCs, besides root.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Who may write")]
pub struct WritePolicyArgs {
    /// A user id whose processes may write over the Unix socket (uid 0
    /// always may; over TCP nobody may). Repeat for several.
    #[arg(long = "write-uid", value_name = "UID")]
    pub write_uids: Vec<u32>,
    /// A group id whose members may write over the Unix socket: the peer's
    /// gid, or one of its process's supplementary groups when it connected.
    /// Repeat for several.
    #[arg(long = "write-gid", value_name = "GID")]
    pub write_gids: Vec<u32>,
}

impl WritePolicyArgs {
    /// The policy these arguments describe.
    pub fn policy(&self) -> WritePolicy {
        WritePolicy {
            uids: self.write_uids.iter().copied().collect(),
            gids: self.write_gids.iter().copied().collect(),
        }
    }
}

// ------------------------------------------------------------------------------

impl ServeArgs {
    /// The sync configuration these arguments describe.
    pub fn sync_config(&self) -> anyhow::Result<SyncConfig> {
        let mut maps = Vec::new();
        for arg in &self.maps {
            let (name, path) = split_name(arg);
            maps.push(MapSpec::pin(name, path));
        }
        for arg in &self.map_ids {
            let (name, id) = split_name(arg);
            let id = id
                .parse()
                .with_context(|| format!("--map-id {arg}: `{id}` is not a map id"))?;
            maps.push(MapSpec::id(name, id));
        }
        for arg in &self.switches {
            let (name, path) = split_name(arg);
            maps.push(MapSpec::switch(name, path));
        }
        for arg in &self.switch_creates {
            let (name, path, _) = parse_switch_create(arg)?;
            maps.push(MapSpec::switch(name, path));
        }
        if maps.is_empty() {
            anyhow::bail!(
                "nothing to mirror: give at least one --map [NAME=]PIN_PATH, --map-id [NAME=]ID or --switch [NAME=]OUTER_PIN"
            );
        }
        for arg in &self.polls {
            let (Some(name), secs) = split_name(arg) else {
                anyhow::bail!("--poll {arg}: expected NAME=SECS");
            };
            let every = parse_seconds(secs).with_context(|| format!("--poll {arg}"))?;
            let spec = maps
                .iter_mut()
                .find(|spec| spec.name == name)
                .with_context(|| format!("--poll {arg}: no map named `{name}` is configured (name maps with --map NAME=PATH)"))?;
            spec.poll_interval = Some(every);
        }
        let reconcile_interval = match self.reconcile_interval {
            0.0 => None,
            secs if secs > 0.0 && secs.is_finite() => {
                Some(std::time::Duration::from_secs_f64(secs))
            }
            secs => anyhow::bail!(
                "--reconcile-interval {secs}: expected seconds > 0, or 0 to turn it off"
            ),
        };
        Ok(SyncConfig {
            maps,
            pin_dir: self.pin_dir.clone(),
            ring_bytes: self.ringbuf_bytes,
            reconcile_interval,
            log_limits: LogLimits {
                max_events: self.log_events,
                max_bytes: self.log_bytes,
            },
        })
    }
}

/// The switchable maps `--switch-create` asks for: pin and shape.
fn switch_sets(args: &ServeArgs) -> anyhow::Result<Vec<(PathBuf, SwitchShape)>> {
    args.switch_creates
        .iter()
        .map(|arg| parse_switch_create(arg).map(|(_, pin, shape)| (pin.into(), shape)))
        .collect()
}

/// Parses `[NAME=]PIN:KIND:KEY:VALUE:MAX` (PIN may hold colons: the last
/// four fields are split from the right).
fn parse_switch_create(arg: &str) -> anyhow::Result<(Option<&str>, &str, SwitchShape)> {
    let (name, rest) = split_name(arg);
    let fields: Vec<&str> = rest.rsplitn(5, ':').collect();
    let [max, value, key, kind, pin] = fields[..] else {
        anyhow::bail!("--switch-create {arg}: expected [NAME=]PIN:KIND:KEY:VALUE:MAX");
    };
    let kind = match kind {
        "hash" => MapKind::Hash,
        "array" => MapKind::Array,
        "percpu_hash" => MapKind::PercpuHash,
        "percpu_array" => MapKind::PercpuArray,
        other => anyhow::bail!(
            "--switch-create {arg}: kind `{other}` is not one of hash, array, percpu_hash, percpu_array"
        ),
    };
    let number =
        |what: &str, field: &str| -> anyhow::Result<u32> {
            field.parse().ok().filter(|n| *n > 0).with_context(|| {
                format!("--switch-create {arg}: {what} `{field}` is not a number > 0")
            })
        };
    let shape = SwitchShape {
        kind,
        key_size: number("key size", key)?,
        value_size: number("value size", value)?,
        max_entries: number("max entries", max)?,
    };
    Ok((name, pin, shape))
}

/// Splits `NAME=VALUE` (NAME without a slash) from a plain `VALUE`.
fn split_name(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() && !name.contains('/') => (Some(name), value),
        _ => (None, arg),
    }
}

fn parse_seconds(arg: &str) -> anyhow::Result<std::time::Duration> {
    let secs: f64 = arg
        .parse()
        .with_context(|| format!("`{arg}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        anyhow::bail!("`{arg}` is not a positive number of seconds");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn parse_ring_bytes(arg: &str) -> Result<u32, String> {
    let bytes: u32 = arg
        .parse()
        .map_err(|_| format!("`{arg}` is not a number of bytes"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "{bytes} is not a power-of-two multiple of the 4096-byte page size"
        ));
    }
    Ok(bytes)
}

/// Runs the sidecar until SIGINT or SIGTERM. Everything that can be wrong
/// with the arguments or the addresses fails before any map is opened.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.sync_config()?;
    let follows = args.follow.configs()?;
    // checked now; fitted to the descriptors left once the maps are open
    args.connections.limits(None)?;
    args.security.check_listen(&args.listen)?;
    let tls = match args.security.tls_files() {
        Some(files) => Some(mapsync_grpc::tls::ServerTls::load(files).context("cannot load TLS")?),
        None => None,
    };
    let authz = super::security_args::authorizer(&args.security, &args.write_policy.policy())?;
    let metrics_access =
        super::security_args::metrics_access(&args.security, args.metrics_listen.as_deref())?;
    let listener = Listener::bind_with(&args.listen, args.security.socket_options()?).await?;
    let metrics_listener = match &args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    for (pin, shape) in switch_sets(&args)? {
        mapsync_kernel::switch::create(&pin, shape)
            .with_context(|| format!("--switch-create {}", pin.display()))?;
    }
    let mut sync = MapSync::start(config)
        .await
        .context("cannot start mirroring")?;
    let connection_limits = args
        .connections
        .limits(super::connection_args::connection_fd_room())?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let watch_stats = std::sync::Arc::new(WatchStats::default());
    let fleet = FollowArgs::spawn(follows, &args.follow.report, &sync)?;
    let metrics = match (metrics_listener, &args.metrics_listen) {
        (Some(listener), Some(addr)) => {
            tracing::info!(metrics = %addr, "serving metrics");
            let collector = crate::metrics::SyncCollector::new(&sync, watch_stats.clone())
                .with_authz(authz.clone())
                .with_fleet(fleet.stats.clone());
            Some(tokio::spawn(crate::metrics_auth::serve(
                listener,
                crate::metrics::router(collector),
                metrics_access.clone(),
                stopped(stopping.clone()),
            )))
        }
        _ => None,
    };
    let policy = args.write_policy.policy();
    if authz.has_policy() {
        tracing::info!(
            "reads and writes: as the policy file's roles allow (root over the Unix socket: all)"
        );
    } else if args.listen.starts_with("unix:") {
        tracing::info!(write_uids = ?policy.uids, write_gids = ?policy.gids, "writes: accepted over the Unix socket from uid 0 and these users and groups");
    } else {
        tracing::info!(
            "writes: none accepted (over TCP nobody may write; serve on unix:PATH to accept them)"
        );
    }
    tracing::info!(listen = %args.listen, max_connections = connection_limits.max_connections, epoch = %sync.store().epoch(), revision = sync.store().revision(), "serving");
    let options = ServeOptions {
        stats: watch_stats,
        connections: connection_limits,
        limits: args.watch_limits.limits(),
        writes: Some((sync.commands(), policy)),
        tls: tls.clone(),
        status: Some(sync.stats_handle()),
        authz: authz.clone(),
    };
    if let Some(tls) = &tls {
        tracing::info!(
            mutual = tls.mutual(),
            "TLS on; SIGHUP reloads the certificate"
        );
    }
    if let Some(policy) = &args.security.policy {
        tracing::info!(policy = %policy.display(), "policy file in force; SIGHUP reloads it");
    }
    let reloaded_tls = tls.iter().chain(&metrics_access.tls).cloned().collect();
    super::security_args::reload_on_sighup(reloaded_tls, authz)?;
    let mut server = tokio::spawn(serve_with(
        listener,
        sync.store().clone(),
        options,
        stopped(stopping),
    ));
    // stop on a signal, and also when the mirror stops following the kernel:
    // serving a mirror that no longer changes would be serving stale data
    let ingest_ended = tokio::select! {
        _ = crate::shutdown_signal() => false,
        _ = sync.stopped() => true,
        result = &mut server => {
            result.context("gRPC server task")?.context("gRPC server failed")?;
            anyhow::bail!("the gRPC server stopped unexpectedly");
        }
    };
    tracing::info!("shutting down");
    fleet.stop().await;
    let _ = stop.send(true);
    server
        .await
        .context("gRPC server task")?
        .context("gRPC server failed")?;
    if let Some(metrics) = metrics {
        metrics.await.context("metrics task")??;
    }
    match sync.shutdown().await {
        Ok(()) => {}
        // a dump of a huge map was under way: the process exits all the same
        // (the kernel maps are the state; nothing is lost)
        Err(error @ mapsync_kernel::KernelError::ShutdownTimedOut { .. }) => {
            tracing::warn!(%error, "exiting without waiting for the ingest task");
        }
        Err(error) => return Err(error).context("ingest task failed"),
    }
    if ingest_ended {
        anyhow::bail!("the ingest task stopped: the mirror no longer follows the kernel");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_optional_and_paths_with_equals_signs_stay_whole() {
        assert_eq!(
            split_name("flows=/sys/fs/bpf/x"),
            (Some("flows"), "/sys/fs/bpf/x")
        );
        assert_eq!(split_name("/sys/fs/bpf/x"), (None, "/sys/fs/bpf/x"));
        assert_eq!(split_name("/sys/fs/bpf/a=b"), (None, "/sys/fs/bpf/a=b"));
        assert_eq!(split_name("42"), (None, "42"));
    }

    fn args(extra: &[&str]) -> ServeArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut argv = vec!["serve"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).serve
    }

    #[test]
    fn polls_attach_to_named_maps_and_reconcile_zero_turns_it_off() {
        let config = args(&[
            "--map",
            "a=/x/a",
            "--map-id",
            "b=7",
            "--poll",
            "b=0.5",
            "--reconcile-interval",
            "0",
        ])
        .sync_config()
        .expect("valid");
        assert_eq!(config.maps[0].poll_interval, None);
        assert_eq!(
            config.maps[1].poll_interval,
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(config.reconcile_interval, None);
        let default = args(&["--map", "/x/a"]).sync_config().expect("valid");
        assert_eq!(
            default.reconcile_interval,
            Some(mapsync_kernel::DEFAULT_RECONCILE_INTERVAL)
        );
    }

    #[test]
    fn bad_polls_and_intervals_are_explained() {
        let error = args(&["--map", "a=/x/a", "--poll", "zzz=1"])
            .sync_config()
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("no map named `zzz`"),
            "{error:#}"
        );
        let error = args(&["--map", "a=/x/a", "--poll", "a=soon"])
            .sync_config()
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("not a number of seconds"),
            "{error:#}"
        );
        let error = args(&["--map", "a=/x/a", "--reconcile-interval=-1"])
            .sync_config()
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("expected seconds > 0"),
            "{error:#}"
        );
        let error = args(&[]).sync_config().unwrap_err();
        assert!(error.to_string().contains("nothing to mirror"));
    }

    #[test]
    fn write_uids_and_gids_repeat_into_the_policy() {
        let policy = args(&[
            "--map",
            "/x/a",
            "--write-uid",
            "1000",
            "--write-uid",
            "1001",
            "--write-gid",
            "50",
        ])
        .write_policy
        .policy();
        assert_eq!(policy.uids, [1000, 1001].into());
        assert_eq!(policy.gids, [50].into());
        assert_eq!(
            args(&["--map", "/x/a"]).write_policy.policy(),
            WritePolicy::default()
        );
    }

    #[test]
    fn switchable_maps_are_adopted_or_created_with_a_parsed_shape() {
        let config = args(&[
            "--switch",
            "rules=/sys/fs/bpf/rules",
            "--switch-create",
            "blocks=/sys/fs/bpf/a:b/blocks:array:4:8:1024",
        ])
        .sync_config()
        .expect("valid");
        assert_eq!(
            config.maps[0].source,
            mapsync_kernel::MapSource::Switch("/sys/fs/bpf/rules".into())
        );
        assert_eq!(config.maps[1].name, "blocks");
        assert_eq!(
            config.maps[1].source,
            mapsync_kernel::MapSource::Switch("/sys/fs/bpf/a:b/blocks".into())
        );
        let (_, pin, shape) =
            parse_switch_create("/sys/fs/bpf/x:percpu_hash:8:16:10").expect("valid");
        assert_eq!(pin, "/sys/fs/bpf/x");
        assert_eq!(
            shape,
            SwitchShape {
                kind: MapKind::PercpuHash,
                key_size: 8,
                value_size: 16,
                max_entries: 10
            }
        );
        for (bad, says) in [
            ("x=/p:hash:4:8", "expected [NAME=]PIN:KIND:KEY:VALUE:MAX"),
            ("x=/p:lru_hash:4:8:16", "kind `lru_hash`"),
            ("x=/p:hash:4:zero:16", "value size `zero`"),
            ("x=/p:hash:4:8:0", "max entries `0`"),
        ] {
            let error = parse_switch_create(bad).unwrap_err();
            assert!(format!("{error:#}").contains(says), "{bad}: {error:#}");
        }
    }

    #[test]
    fn ring_size_must_be_a_power_of_two_pages() {
        assert_eq!(parse_ring_bytes("4096"), Ok(4096));
        assert!(
            parse_ring_bytes("6000")
                .unwrap_err()
                .contains("power-of-two")
        );
        assert!(parse_ring_bytes("2048").is_err());
        assert!(
            parse_ring_bytes("lots")
                .unwrap_err()
                .contains("not a number")
        );
    }
}
