//! Running `mapsync serve` and the CLI as a user would, for end-to-end tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mapsync_test_support::PinDir;

pub mod fleet;

/// The `mapsync` binary under test.
pub fn mapsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mapsync"))
}

/// A `mapsync serve` process on a Unix socket, killed when dropped. Its
/// stderr (the log) is kept for [`Server::log`] and echoed to the test's
/// stderr with a `[serve PID]` prefix.
pub struct Server {
    child: Child,
    pub endpoint: String,
    args: Vec<String>,
    nofile: Option<u64>,
    log: Arc<Mutex<Vec<String>>>,
    _socket_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `mapsync serve --map ARG...` with its capture maps in `pins`,
    /// and waits until it answers.
    pub fn start(pins: &PinDir, maps: &[String]) -> Server {
        Server::start_with(pins, maps, &[])
    }

    /// The same, with extra `serve` arguments (`--ringbuf-bytes`,
    /// `--metrics-listen`, ...).
    pub fn start_with(pins: &PinDir, maps: &[String], extra: &[&str]) -> Server {
        Server::start_on(pins, maps, None, extra, None)
    }

    /// The same on `listen` (`None`: a Unix socket in a temporary
    /// directory), with the open-file limit (soft and hard) set to `nofile`.
    pub fn start_on(
        pins: &PinDir,
        maps: &[String],
        listen: Option<&str>,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Server {
        let socket_dir = tempfile::tempdir().expect("temp dir");
        let endpoint = match listen {
            Some(listen) => listen.to_owned(),
            None => format!("unix:{}", socket_dir.path().join("mapsync.sock").display()),
        };
        let mut args: Vec<String> = vec!["serve".into(), "--listen".into(), endpoint.clone()];
        args.push("--pin-dir".into());
        args.push(pins.join("capture").display().to_string());
        for map in maps {
            args.push("--map".into());
            args.push(map.clone());
        }
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let child = spawn_serve(&args, nofile, &log);
        let mut server = Server {
            child,
            endpoint,
            args,
            nofile,
            log,
            _socket_dir: socket_dir,
        };
        server.wait_answering();
        server
    }

    /// Starts the server again with the same arguments and endpoint (after
    /// [`Server::kill9`]), and waits until it answers.
    pub fn restart(&mut self) {
        self.child = spawn_serve(&self.args, self.nofile, &self.log);
        self.wait_answering();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits until the process is stopped (state `T` in /proc), or panics
    /// after `timeout`.
    pub fn wait_stopped(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .expect("read /proc/PID/stat");
            // the state follows the parenthesised command name
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('T') {
                return;
            }
            assert!(Instant::now() < deadline, "server not stopped: {stat}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// The log lines (stderr) so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    fn wait_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                panic!("mapsync serve exited early: {status}");
            }
            let probe = mapsync()
                .args(["list", "--endpoint", &self.endpoint, "--json", "__probe__"])
                .output()
                .expect("run list");
            let stderr = String::from_utf8_lossy(&probe.stderr);
            if stderr.contains("unknown map") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mapsync serve did not answer within 20 s");
    }

    /// Runs a CLI subcommand against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let (command, rest) = args.split_first().expect("a subcommand");
        mapsync()
            .arg(command)
            .args(["--endpoint", &self.endpoint])
            .args(rest)
            .output()
            .expect("run mapsync")
    }

    /// Starts a long-running CLI subcommand (e.g. `watch`) with piped stdout.
    pub fn spawn_cli(&self, args: &[&str]) -> (Child, Lines) {
        let (command, rest) = args.split_first().expect("a subcommand");
        let mut child = mapsync()
            .arg(command)
            .args(["--endpoint", &self.endpoint])
            .args(rest)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mapsync");
        let stdout = child.stdout.take().expect("piped stdout");
        (child, Lines::new(stdout))
    }

    /// Runs a CLI subcommand against this server and kills it if it has not
    /// ended within `timeout` (a panic then).
    pub fn cli_within(&self, args: &[&str], timeout: Duration) -> Output {
        let (command, rest) = args.split_first().expect("a subcommand");
        let child = mapsync()
            .arg(command)
            .args(["--endpoint", &self.endpoint])
            .args(rest)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mapsync");
        wait_output(child, timeout)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll server").is_none()
    }
}

/// Spawns `mapsync ARGS` with its stderr (the log) appended to `log` and
/// echoed to the test's stderr with a `[serve PID]` prefix.
fn spawn_serve(args: &[String], nofile: Option<u64>, log: &Arc<Mutex<Vec<String>>>) -> Child {
    let mut command = mapsync();
    if let Some(nofile) = nofile {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: setrlimit is async-signal-safe and touches no memory of
        // the parent; it runs in the child between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = command
        .args(args)
        // plain log lines, so that tests can read their fields
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mapsync serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let pid = child.id();
    let lines = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            eprintln!("[serve {pid}] {line}");
            lines.lock().expect("log lock").push(line);
        }
    });
    child
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a child's stdout, read on a thread so reads can time out.
pub struct Lines {
    /// Each line with the time the reader thread received it.
    rx: std::sync::mpsc::Receiver<(Instant, String)>,
}

impl Lines {
    /// Lines of `stdout` (or any pipe), read on a thread.
    pub fn new(stdout: impl Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// The next line, or a panic after `timeout`.
    pub fn next(&self, timeout: Duration) -> String {
        self.rx
            .recv_timeout(timeout)
            .expect("a line of output in time")
            .1
    }

    /// Whether a line arrives within `timeout`.
    pub fn next_within(&self, timeout: Duration) -> Option<String> {
        self.next_timed_within(timeout).map(|(_, line)| line)
    }

    /// The next line and when it was read from the child, if one arrives
    /// within `timeout`.
    pub fn next_timed_within(&self, timeout: Duration) -> Option<(Instant, String)> {
        self.rx.recv_timeout(timeout).ok()
    }
}

/// Parses JSON lines.
pub fn json_lines(output: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

/// `--map NAME=PATH`.
pub fn map_arg(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

/// A path for a pinned map in `pins`.
pub fn pin(pins: &PinDir, name: &str) -> PathBuf {
    pins.join(name)
}

/// A child process killed (SIGKILL) and reaped when dropped, so that a
/// failing test leaves nothing running.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits up to `timeout` for the process to end on its own; its exit
    /// status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("poll child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects a child's stdout and stderr, killing it (and panicking) if it
/// has not exited within `timeout`.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    }
    let stdout = reader(child.stdout.take().expect("piped stdout"));
    let stderr = reader(child.stderr.take().expect("piped stderr"));
    let mut guard = ChildGuard(child);
    let Some(status) = guard.wait_exit(timeout) else {
        panic!("the command did not end within {timeout:?}");
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `line` without ANSI escape sequences (in case the log is coloured).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The numeric value of `field=N` in a log line.
pub fn log_field(line: &str, field: &str) -> Option<u64> {
    let prefix = format!("{field}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .and_then(|value| value.trim_matches('"').parse().ok())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Scrapes `http://ADDR/metrics`: metric name -> value (counters keep their
/// `_total` suffix). `None` if the endpoint does not answer in time.
pub fn scrape_metrics(addr: &str) -> Option<BTreeMap<String, f64>> {
    let timeout = Duration::from_secs(5);
    let socket_addr: std::net::SocketAddr = addr.parse().expect("HOST:PORT");
    let mut stream = std::net::TcpStream::connect_timeout(&socket_addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// A metric's value from a scrape, by its name with or without the
/// counter suffix `_total`.
pub fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics
        .get(name)
        .or_else(|| metrics.get(&format!("{name}_total")))
        .copied()
        .unwrap_or_else(|| panic!("metric {name} missing from {metrics:?}"))
}

/// A map's entries as lowercase hex, key -> value, as `mapsync list --json`
/// and `bpftool map dump` show them.
pub type HexMap = BTreeMap<String, String>;

/// The kernel's content of the pinned map, as hex (`bpftool map dump`).
pub fn kernel_hex(pin: &Path) -> HexMap {
    mapsync_test_support::dump(pin)
        .iter()
        .map(|(k, v)| (mapsync_test_support::hex(k), mapsync_test_support::hex(v)))
        .collect()
}

/// `mapsync list MAP --json` against `server` (killed after `timeout`), or
/// `None` if the CLI failed.
pub fn listed(server: &Server, map: &str, timeout: Duration) -> Option<HexMap> {
    let output = server.cli_within(&["list", map, "--json"], timeout);
    if !output.status.success() {
        return None;
    }
    Some(
        json_lines(&output.stdout)
            .into_iter()
            .map(|line| {
                (
                    line["key"].as_str().expect("key").to_owned(),
                    line["value"].as_str().expect("value").to_owned(),
                )
            })
            .collect(),
    )
}
