//! Real identities for the who-may-write tests (shared by
//! `grpc-api/tests/write_permissions.rs` and the root package's
//! `tests/write_e2e.rs` through `#[path]`): a system user and group made
//! with `useradd`/`groupadd` and removed afterwards, and a child process run
//! as them. Needs root; under `CI=true` a failure to create them panics.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// A system user (with its own group) and a system group, removed when
/// dropped.
pub struct TestIdentity {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    pub extra_gid: u32,
}

impl TestIdentity {
    /// `None` (after saying why) when they cannot be created outside CI;
    /// a panic under `CI=true`.
    pub fn create() -> Option<TestIdentity> {
        let suffix = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() % 100_000)
        );
        let user = format!("mapsync-test-{suffix}");
        let group = format!("mapsync-testg-{suffix}");
        let made = run_retrying(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                &user,
            ],
        )
        .and_then(|()| run_retrying("groupadd", &["--system", &group]));
        if let Err(why) = made {
            let _ = Command::new("userdel").arg(&user).output();
            let _ = Command::new("groupdel").arg(&group).output();
            let why = format!("cannot create a test user and group: {why}");
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
                panic!("{why} (CI is set, so this is a failure)");
            }
            eprintln!("\n!!! NOT RUN: {why} !!!\n");
            return None;
        }
        let id = |flag: &str, name: &str| -> u32 {
            let output = Command::new("id").args([flag, name]).output().expect("id");
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("an id")
        };
        let getent = Command::new("getent")
            .args(["group", &group])
            .output()
            .expect("getent");
        let extra_gid = String::from_utf8_lossy(&getent.stdout)
            .trim()
            .split(':')
            .nth(2)
            .and_then(|gid| gid.parse().ok())
            .expect("the group's gid");
        Some(TestIdentity {
            uid: id("-u", &user),
            gid: id("-g", &user),
            user,
            group,
            extra_gid,
        })
    }
}

impl Drop for TestIdentity {
    fn drop(&mut self) {
        let _ = run_retrying("userdel", &[&self.user]);
        let _ = run_retrying("groupdel", &[&self.group]);
    }
}

/// Runs a user-database command, retrying while another process holds the
/// database lock.
fn run_retrying(program: &str, args: &[&str]) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        match Command::new(program).args(args).output() {
            Ok(output) if output.status.success() => return Ok(()),
            Ok(output) => {
                last = format!(
                    "{program}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )
            }
            Err(error) => return Err(format!("{program}: {error}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// Runs `command` as `uid`/`gid` with exactly the supplementary `groups`,
/// and returns its stdout; panics if it fails.
pub fn run_as(mut command: Command, uid: u32, gid: u32, groups: &[u32]) -> String {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: setgroups, setgid and setuid are async-signal-safe; they run in
    // the child between fork and exec and touch only `groups`, moved in.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
