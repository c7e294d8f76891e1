//! The pin directory: checking it is on bpffs, and the lock that keeps a
//! second mapsync off it.
//!
//! bpffs holds only directories and BPF objects (no regular files), so the
//! lock is not a lock *file*: it is `flock(LOCK_EX | LOCK_NB)` on an fd of
//! the directory itself, which bpffs supports like any other filesystem.
//! The kernel drops a flock when the last fd of its open file description is
//! closed, so the lock dies with the process however it ends (`kill -9`
//! included), and there is never a stale lock to clean up.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::KernelError;

/// `BPF_FS_MAGIC`: `statfs.f_type` of bpffs.
pub const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Who holds the lock of a pin directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockHolder {
    /// The holder's process id, from `/proc/locks`.
    Pid(u32),
    /// The holder could not be found (another pid namespace, `/proc` not
    /// mounted, or it let go between our attempt and the look-up).
    Unknown,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockHolder::Pid(pid) => write!(f, "pid {pid}"),
            LockHolder::Unknown => f.write_str("another process"),
        }
    }
}

/// Checks that `pin_dir` is on bpffs, or, if it does not exist yet, that
/// its nearest existing parent is (`mkdir` there then makes a bpffs
/// directory). Pinning anywhere else fails, so this runs before anything
/// is loaded, to say why in one line.
pub fn check_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let mut checked = pin_dir;
    // `Path::exists` is false for an empty path; an empty or relative pin
    // dir ends at "" and is checked as ".", where a mkdir would go
    while !checked.as_os_str().is_empty() && !checked.exists() {
        checked = checked.parent().unwrap_or(Path::new(""));
    }
    let checked = if checked.as_os_str().is_empty() {
        Path::new(".")
    } else {
        checked
    };
    let fs_type = fs_type(checked).map_err(|source| KernelError::Host {
        what: "checking the pin directory's filesystem (statfs)",
        source,
    })?;
    if fs_type == BPF_FS_MAGIC {
        return Ok(());
    }
    Err(KernelError::NotBpffs {
        pin_dir: pin_dir.to_owned(),
        checked: checked.to_owned(),
        fs: fs_name(fs_type),
    })
}

/// `statfs(path).f_type`.
fn fs_type(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is writable.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
    Ok(stat.f_type as i64)
}

/// A readable name for the filesystems a pin dir is most often put on by
/// mistake; the magic number otherwise.
fn fs_name(fs_type: i64) -> String {
    let name = match fs_type {
        0x0102_1994 => "tmpfs",
        0x6265_6572 => "sysfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlayfs",
        0x9fa0 => "procfs",
        0x1373 => "devtmpfs",
        _ => return format!("a filesystem with magic {fs_type:#x}"),
    };
    name.to_owned()
}

/// The exclusive lock of one pin directory, held while this value lives.
#[derive(Debug)]
pub struct PinDirLock {
    /// The directory's fd carrying the flock; dropping the lock unlocks it
    /// explicitly (see `Drop`).
    dir: OwnedFd,
    path: PathBuf,
}

impl PinDirLock {
    /// Takes the lock of `pin_dir` (an existing directory) without waiting.
    /// If another process holds it, the error names that process's pid
    /// (from `/proc/locks`, matched by the directory's device and inode).
    pub fn acquire(pin_dir: &Path) -> Result<PinDirLock, KernelError> {
        let dir: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(pin_dir)
            .map_err(|source| KernelError::Host {
                what: "opening the pin directory to lock it",
                source,
            })?
            .into();
        // SAFETY: `dir` is an open fd owned by this function.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            tracing::debug!(pin_dir = %pin_dir.display(), "pin directory locked");
            return Ok(PinDirLock {
                dir,
                path: pin_dir.to_owned(),
            });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(KernelError::Host {
                what: "locking the pin directory (flock)",
                source: error,
            });
        }
        let holder = std::fs::metadata(pin_dir)
            .ok()
            .and_then(|meta| {
                let locks = std::fs::read_to_string("/proc/locks").ok()?;
                flock_holder(&locks, meta.dev(), meta.ino())
            })
            .map_or(LockHolder::Unknown, LockHolder::Pid);
        Err(KernelError::PinDirLocked {
            pin_dir: pin_dir.to_owned(),
            holder,
        })
    }

    /// The locked directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDirLock {
    /// Unlocks before the fd closes. A flock belongs to the open file, and
    /// closing our fd does not release it while a copy lives on: a child
    /// another thread is forking holds one until its exec closes it
    /// (`O_CLOEXEC`). `LOCK_UN` releases it for every copy at once, so an
    /// instance started right after this one stopped finds the directory
    /// free.
    fn drop(&mut self) {
        // SAFETY: `self.dir` is an open fd owned by this value.
        unsafe { libc::flock(self.dir.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The pid of the process holding a `FLOCK` `WRITE` lock on the file with
/// device `dev` and inode `ino`, from the text of `/proc/locks`. Lines look
/// like `1: FLOCK  ADVISORY  WRITE 16588 00:28:11416 0 EOF` (major and minor
/// in hex, the inode in decimal); waiters' lines (` -> `) are skipped.
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        if line.contains("->") {
            return None;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, "WRITE", pid, file, ..] = fields.as_slice() else {
            return None;
        };
        let mut parts = file.split(':');
        let line_major = u32::from_str_radix(parts.next()?, 16).ok()?;
        let line_minor = u32::from_str_radix(parts.next()?, 16).ok()?;
        let line_ino: u64 = parts.next()?.parse().ok()?;
        (line_major == major && line_minor == minor && line_ino == ino)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_found_by_device_and_inode_only_for_an_exclusive_flock() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 700 00:28:11416 0 EOF
2: FLOCK  ADVISORY  READ 701 00:28:11416 0 EOF
3: FLOCK  ADVISORY  WRITE 702 00:29:11416 0 EOF
4: FLOCK  ADVISORY  WRITE 703 00:28:11417 0 EOF
5: FLOCK  ADVISORY  WRITE 16588 00:28:11416 0 EOF
5: -> FLOCK  ADVISORY  WRITE 999 00:28:11416 0 EOF
";
        let dev = libc::makedev(0, 0x28);
        assert_eq!(flock_holder(locks, dev, 11416), Some(16588));
        assert_eq!(flock_holder(locks, dev, 1), None);
        assert_eq!(flock_holder("", dev, 11416), None);
        // a major and minor past two hex digits
        let wide = "1: FLOCK  ADVISORY  WRITE 42 103:1f:7 0 EOF\n";
        assert_eq!(flock_holder(wide, libc::makedev(0x103, 0x1f), 7), Some(42));
    }

    #[test]
    fn a_dropped_lock_is_free_at_once_even_while_a_copy_of_its_fd_lives() {
        let dir =
            std::env::temp_dir().join(format!("mapsync-pin-lock-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let first = PinDirLock::acquire(&dir).expect("first lock");
        match PinDirLock::acquire(&dir) {
            Err(KernelError::PinDirLocked { holder, .. }) => {
                assert_eq!(holder, LockHolder::Pid(std::process::id()))
            }
            other => panic!("a second lock in one process must be refused, got {other:?}"),
        }
        // what a child being forked holds until its exec: a copy of the fd
        let copy = first.dir.try_clone().expect("dup");
        drop(first);
        let again = PinDirLock::acquire(&dir).expect("the lock is free once its holder is dropped");
        drop((again, copy));
        std::fs::remove_dir(&dir).expect("remove temp dir");
    }

    #[test]
    fn a_missing_pin_dir_is_judged_by_its_nearest_existing_parent() {
        let tmp = std::env::temp_dir().join(format!("mapsync-pin-dir-unit-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        let missing = tmp.join("not").join("yet");
        match check_bpffs(&missing) {
            // /tmp may itself be on bpffs only on a very odd machine
            Ok(()) => assert_eq!(fs_type(&tmp).expect("statfs"), BPF_FS_MAGIC),
            Err(KernelError::NotBpffs {
                pin_dir, checked, ..
            }) => {
                assert_eq!(pin_dir, missing);
                assert_eq!(checked, tmp);
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
        std::fs::remove_dir_all(&tmp).expect("clean up");
    }

    #[test]
    fn filesystems_are_named_or_given_by_magic() {
        assert_eq!(fs_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_name(0x1234), "a filesystem with magic 0x1234");
    }
}
