//! Running `mapsync serve` and the CLI as a user would, for end-to-end tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mapsync_test_support::PinDir;

/// The `mapsync` binary under test.
pub fn mapsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mapsync"))
}

/// A `mapsync serve` process on a Unix socket, killed when dropped.
pub struct Server {
    child: Child,
    pub endpoint: String,
    _socket_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `mapsync serve --map ARG...` with its capture maps in `pins`,
    /// and waits until it answers.
    pub fn start(pins: &PinDir, maps: &[String]) -> Server {
        let socket_dir = tempfile::tempdir().expect("temp dir");
        let endpoint = format!("unix:{}", socket_dir.path().join("mapsync.sock").display());
        let mut command = mapsync();
        command
            .args(["serve", "--listen", &endpoint, "--pin-dir"])
            .arg(pins.join("capture"));
        for map in maps {
            command.args(["--map", map]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mapsync serve");
        let mut server = Server {
            child,
            endpoint,
            _socket_dir: socket_dir,
        };
        server.wait_answering();
        server
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

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll server").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a child's stdout, read on a thread so reads can time out.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
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
    }

    /// Whether a line arrives within `timeout`.
    pub fn next_within(&self, timeout: Duration) -> Option<String> {
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
