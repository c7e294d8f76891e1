//! The errors of the kernel side: opening maps, `bpf()` calls, loading and
//! attaching mapsync's programs, the ring, the pin directory, the task.

use std::io;
use std::path::PathBuf;

use mapsync_core::{MapKind, SyncError};

/// Everything that can go wrong on the kernel side, with the facts a caller
/// needs to report it precisely. Mirror errors (an unknown map, a stopped
/// mirror) come wrapped as [`KernelError::Mirror`].
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Two maps were configured under one name.
    #[error("map name `{name}` is configured twice")]
    DuplicateMap {
        /// The name.
        name: String,
    },
    /// A pin path could not be opened.
    #[error("cannot open pinned object {path}: {source}")]
    OpenPin {
        /// The pin path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A pin path names a BPF object that is not a map (a program, a link).
    #[error("{path} is not a BPF map")]
    NotAMap {
        /// The pin path.
        path: PathBuf,
    },
    /// No map has that id.
    #[error("cannot open map id {id}: {source}")]
    OpenId {
        /// The id.
        id: u32,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The map's kind cannot be mirrored.
    #[error(
        "map `{name}` is a {kind} map, which mapsync cannot mirror (supported: hash, lru_hash, percpu_hash, lru_percpu_hash, array, percpu_array, hash_of_maps, array_of_maps)"
    )]
    UnsupportedKind {
        /// The map's name.
        name: String,
        /// Its kind.
        kind: MapKind,
    },
    /// The map's keys or values are larger than a change record carries.
    #[error(
        "map `{name}`: {what} of {size} bytes is larger than the {max} bytes a change record carries"
    )]
    TooLarge {
        /// The map's name.
        name: String,
        /// "key" or "value".
        what: &'static str,
        /// Its size.
        size: u32,
        /// The limit.
        max: usize,
    },
    /// More maps than the syscall trace can watch.
    #[error("too many maps: the syscall trace watches at most {max}")]
    TooManyMaps {
        /// The limit.
        max: u32,
    },
    /// A `bpf()` call failed.
    #[error("bpf({op}) failed: {source}")]
    Syscall {
        /// The command.
        op: &'static str,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// Loading mapsync's BPF objects failed.
    #[error("loading BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("program `{program}`: {source}")]
    Program {
        /// The program's name.
        program: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map of mapsync's objects could not be used.
    #[error("BPF map `{map}`: {source}")]
    Map {
        /// The map's name.
        map: String,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// A BPF object lacks something mapsync expects in it.
    #[error("BPF object has no {what} `{name}`")]
    MissingInObject {
        /// "map" or "program".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Reading kernel facts (possible CPUs, clock) failed.
    #[error("{what}: {source}")]
    Host {
        /// What was read.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pin directory (or, when it does not exist yet, its nearest
    /// existing parent) is not on bpffs, where BPF objects can be pinned.
    #[error(
        "pin directory {} is not on bpffs ({} is on {fs}): mount one with `mount -t bpf bpf /sys/fs/bpf` or choose a directory under a bpffs mount",
        pin_dir.display(), checked.display()
    )]
    NotBpffs {
        /// The pin directory configured.
        pin_dir: PathBuf,
        /// The directory whose filesystem was checked.
        checked: PathBuf,
        /// That filesystem, by name or magic number.
        fs: String,
    },
    /// Another process (normally another mapsync) holds the pin directory's
    /// lock: two instances on one pin directory would share the ring with
    /// separate read positions.
    #[error(
        "pin directory {} is already in use by {holder}: one mapsync per pin directory; stop that one or use another pin directory",
        pin_dir.display()
    )]
    PinDirLocked {
        /// The pin directory.
        pin_dir: PathBuf,
        /// Who holds it.
        holder: crate::pin_dir::LockHolder,
    },
    /// One kernel map was configured under two names: the mirror is keyed by
    /// map id, so one of the names would stop following it.
    #[error(
        "map id {id} is configured twice, as `{first}` and as `{second}`: mirror it under one name"
    )]
    SameMapTwice {
        /// The kernel map id.
        id: u32,
        /// The name configured first.
        first: String,
        /// The name configured second.
        second: String,
    },
    /// The pinned capture ring is not a ring buffer mapsync can read.
    #[error(
        "{path} is a {kind} map of {max_entries} entries, not a ring buffer whose size is a power-of-two multiple of the page size; remove the pins in its directory"
    )]
    BadRing {
        /// The ring's pin path.
        path: PathBuf,
        /// What kind of map it is.
        kind: MapKind,
        /// Its size.
        max_entries: u32,
    },
    /// The ingest task did not stop within the shutdown wait (it was in the
    /// middle of a long step, such as the dump of a huge map).
    #[error("mapsync's ingest task did not stop within {waited:?}")]
    ShutdownTimedOut {
        /// How long shutdown waited.
        waited: std::time::Duration,
    },
    /// A switchable map could not be created or adopted.
    #[error(transparent)]
    Switch(#[from] crate::switch::SwitchError),
    /// An error of the mirror (for example an unknown map name).
    #[error(transparent)]
    Mirror(#[from] SyncError),
}
