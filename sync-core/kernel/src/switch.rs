//! Switchable maps: a set that BPF programs read through an outer
//! `ARRAY_OF_MAPS` whose slot 0 points at the **active** inner map, and
//! that mapsync replaces as a whole with one slot update.
//!
//! The kernel objects of one switchable map:
//!
//! - the **outer** map, pinned at the path the user gives (`OUTER_PIN`): an
//!   `ARRAY_OF_MAPS`; slot 0 ([`ACTIVE_SLOT`]) holds the active inner map;
//! - the **active** inner map: what programs see, and what the mirror
//!   shows as the logical map (its `MapInfo.id` is the active inner's id);
//! - the **shadow** inner map, of the same shape (kind, key and value size,
//!   capacity, flags, BTF), created by mapsync and held only by its fd:
//!   mapsync fills it, then points slot 0 at it in one
//!   `BPF_MAP_UPDATE_ELEM`; once that syscall returns (the kernel waited an
//!   RCU grace period) no non-sleepable program still uses the old active
//!   map, which becomes the next shadow. A killed mapsync leaves no shadow
//!   behind (the kernel frees it with the last fd); a restarted one creates
//!   a fresh one;
//! - the **version store**, pinned at `OUTER_PIN` + [`VERSION_SUFFIX`]: a
//!   `HASH` from inner map id (`__u32`) to version (`__u64`). mapsync writes
//!   the shadow's entry *before* the switch, so a program that reads the
//!   entry of the inner map it got from slot 0 (`mapsync_version()` in
//!   `mapsync.h`) reads the version of exactly the set it sees.
//!
//! [`create`] makes the whole set (or checks an existing one has the shape
//! asked for); [`adopt`] opens an existing outer map (for example one made
//! with `bpftool map create ... type array_of_maps inner_map ...`),
//! creating the version store when it is missing.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::KernelError;
use crate::{OpenMap, open, sys};
use mapsync_core::map_info::MapKind;

mod error;
mod versions;

pub use error::SwitchError;
use versions::{
    create_version_store, open_version_store, read_version, version_ids, write_version,
};

/// The outer map's slot that holds the active inner map.
pub const ACTIVE_SLOT: u32 = 0;
/// Appended to the outer map's pin path to name the version store's pin.
pub const VERSION_SUFFIX: &str = "_version";
/// Capacity of a version store mapsync creates (two entries are in use).
pub const VERSION_STORE_ENTRIES: u32 = 16;
/// The version of a set mapsync creates, or adopts without a version.
pub const FIRST_VERSION: u64 = 1;

const ARRAY_OF_MAPS: u32 = 12;
const HASH: u32 = 1;

/// The shape of a switchable map's inner maps, for [`create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchShape {
    /// The inner maps' kind: hash, array, percpu_hash or percpu_array.
    pub kind: MapKind,
    /// Key size in bytes (arrays: 4).
    pub key_size: u32,
    /// Value size in bytes (one CPU's, for per-CPU kinds).
    pub value_size: u32,
    /// Capacity of each inner map.
    pub max_entries: u32,
}

impl std::fmt::Display for SwitchShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.kind, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The pin of the version store of the switchable map pinned at `outer`.
pub fn version_pin(outer: &Path) -> PathBuf {
    let mut path = outer.as_os_str().to_owned();
    path.push(VERSION_SUFFIX);
    PathBuf::from(path)
}

fn raw_kind(kind: MapKind) -> Option<u32> {
    match kind {
        MapKind::Hash => Some(1),
        MapKind::Array => Some(2),
        MapKind::PercpuHash => Some(5),
        MapKind::PercpuArray => Some(6),
        _ => None,
    }
}

fn is_array(kind: MapKind) -> bool {
    matches!(kind, MapKind::Array | MapKind::PercpuArray)
}

/// Creates a switchable map pinned at `outer_pin` (the version store at
/// [`version_pin`]): one inner map of `shape` in slot 0 (arrays
/// with `BPF_F_INNER_MAP`, so programs' templates may differ in capacity),
/// at version [`FIRST_VERSION`]. The outer pin is written last: when it
/// exists, the set is complete. If `outer_pin` already holds a switchable
/// map of that shape, it is left as it is (a restarted `serve` keeps its
/// set); another shape is [`SwitchError::ShapeDiffers`].
pub fn create(outer_pin: &Path, shape: SwitchShape) -> Result<(), SwitchError> {
    let kernel = |what: &'static str| {
        move |source| SwitchError::Kernel {
            path: outer_pin.to_owned(),
            what,
            source,
        }
    };
    let bad = |reason: String| SwitchError::BadShape {
        path: outer_pin.to_owned(),
        reason,
    };
    let Some(map_type) = raw_kind(shape.kind) else {
        return Err(SwitchError::InnerKind {
            what: outer_pin.display().to_string(),
            kind: shape.kind,
        });
    };
    if shape.key_size == 0 || shape.value_size == 0 || shape.max_entries == 0 {
        return Err(bad(format!(
            "key size, value size and max entries must be > 0 (got {shape})"
        )));
    }
    if is_array(shape.kind) && shape.key_size != 4 {
        return Err(bad(format!(
            "array keys are 4 bytes, not {}",
            shape.key_size
        )));
    }
    if outer_pin.exists() {
        let existing = open_shape(outer_pin)?;
        if existing != shape {
            return Err(SwitchError::ShapeDiffers {
                path: outer_pin.to_owned(),
                found: existing.to_string(),
                asked: shape.to_string(),
            });
        }
        tracing::info!(pin = %outer_pin.display(), %shape, "switchable map exists: keeping it");
        return Ok(());
    }
    let flags = if is_array(shape.kind) {
        sys::BPF_F_INNER_MAP
    } else {
        0
    };
    let inner = sys::map_create(&sys::MapCreate {
        map_type,
        key_size: shape.key_size,
        value_size: shape.value_size,
        max_entries: shape.max_entries,
        map_flags: flags,
        inner_map_fd: None,
        name: "mapsync_inner".into(),
        btf: None,
    })
    .map_err(kernel("creating the inner map"))?;
    let outer = sys::map_create(&sys::MapCreate {
        map_type: ARRAY_OF_MAPS,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd: Some(inner.as_raw_fd()),
        name: "mapsync_outer".into(),
        btf: None,
    })
    .map_err(kernel("creating the outer map"))?;
    sys::set_outer_slot(outer.as_fd(), ACTIVE_SLOT, inner.as_fd())
        .map_err(kernel("setting slot 0"))?;
    let versions = create_version_store().map_err(kernel("creating the version store"))?;
    let inner_id = sys::map_info(inner.as_fd())
        .map_err(kernel("reading the inner map's id"))?
        .id;
    write_version(versions.as_fd(), inner_id, FIRST_VERSION)
        .map_err(kernel("writing the version"))?;
    let version_path = version_pin(outer_pin);
    // a version store left by an unfinished create is replaced
    if version_path.exists() {
        let _ = std::fs::remove_file(&version_path);
    }
    sys::obj_pin(versions.as_fd(), &version_path).map_err(kernel("pinning the version store"))?;
    if let Err(source) = sys::obj_pin(outer.as_fd(), outer_pin) {
        let _ = std::fs::remove_file(&version_path);
        return Err(SwitchError::Kernel {
            path: outer_pin.to_owned(),
            what: "pinning the outer map",
            source,
        });
    }
    tracing::info!(pin = %outer_pin.display(), %shape, inner_id, "switchable map created");
    Ok(())
}

/// The shape of the active inner map of the set pinned at `outer_pin`.
fn open_shape(outer_pin: &Path) -> Result<SwitchShape, SwitchError> {
    let (_, inner) = open_outer(outer_pin)?;
    let raw = sys::map_info(inner.as_fd()).map_err(|source| SwitchError::Kernel {
        path: outer_pin.to_owned(),
        what: "reading the inner map's info",
        source,
    })?;
    Ok(SwitchShape {
        kind: MapKind::from_raw(raw.map_type),
        key_size: raw.key_size,
        value_size: raw.value_size,
        max_entries: raw.max_entries,
    })
}

/// Opens the outer map at `outer_pin` and the inner map in its slot 0.
fn open_outer(outer_pin: &Path) -> Result<(OwnedFd, OwnedFd), SwitchError> {
    let kernel = |what: &'static str| {
        move |source| SwitchError::Kernel {
            path: outer_pin.to_owned(),
            what,
            source,
        }
    };
    let outer = sys::obj_get(outer_pin).map_err(kernel("opening the outer pin"))?;
    let raw = sys::map_info(outer.as_fd()).map_err(kernel("reading the outer map's info"))?;
    let kind = MapKind::from_raw(raw.map_type);
    if kind != MapKind::ArrayOfMaps || !sys::is_map_fd(outer.as_fd()) {
        return Err(SwitchError::NotOuter {
            path: outer_pin.to_owned(),
            kind,
        });
    }
    let Some(id) = sys::outer_slot(outer.as_fd(), ACTIVE_SLOT).map_err(kernel("reading slot 0"))?
    else {
        return Err(SwitchError::EmptySlot {
            path: outer_pin.to_owned(),
        });
    };
    let inner = sys::map_fd_by_id(id).map_err(kernel("opening the active inner map"))?;
    Ok((outer, inner))
}

/// Opens the active inner map of the set pinned at `outer_pin` as the
/// logical map `name` (no shadow, no version): what `open::open` gives for
/// a [`MapSource::Switch`](crate::MapSource::Switch).
pub fn open_active(name: &str, outer_pin: &Path) -> Result<OpenMap, KernelError> {
    let (_, inner) = open_outer(outer_pin)?;
    describe_active(name, outer_pin, inner)
}

fn describe_active(name: &str, outer_pin: &Path, inner: OwnedFd) -> Result<OpenMap, KernelError> {
    let mut map = open::describe(name, inner)?;
    if raw_kind(map.info.kind).is_none() {
        return Err(SwitchError::InnerKind {
            what: outer_pin.display().to_string(),
            kind: map.info.kind,
        }
        .into());
    }
    map.info.switchable = true;
    Ok(map)
}

/// What the ingest task keeps of a switchable map beside its active inner
/// map (which is the mirrored map's fd): the outer map, the shadow, the
/// version store and the live version.
#[derive(Debug)]
pub(crate) struct SwitchSet {
    /// The outer map's pin (for messages).
    pub(crate) outer_pin: PathBuf,
    outer: OwnedFd,
    versions: OwnedFd,
    /// The inner map that is filled next.
    pub(crate) shadow: OwnedFd,
    /// Its id.
    pub(crate) shadow_id: u32,
    /// The version live now.
    pub(crate) version: u64,
}

/// Opens the switchable map pinned at `outer_pin` as the logical map
/// `name`: the active inner map (returned as the map to mirror), a new
/// shadow of its shape, and the version store (created and pinned at
/// [`version_pin`] when missing; entries of inner maps other than the
/// active one, left by an earlier run, are removed). The active map's
/// version is read from the store, or set to [`FIRST_VERSION`].
pub(crate) fn adopt(name: &str, outer_pin: &Path) -> Result<(OpenMap, SwitchSet), KernelError> {
    let kernel = |what: &'static str| {
        move |source| SwitchError::Kernel {
            path: outer_pin.to_owned(),
            what,
            source,
        }
    };
    let (outer, inner) = open_outer(outer_pin)?;
    let raw = sys::map_info(inner.as_fd()).map_err(kernel("reading the inner map's info"))?;
    let flags = sys::map_flags(inner.as_fd()).map_err(kernel("reading the inner map's flags"))?;
    let active = describe_active(name, outer_pin, inner)?;
    let versions = open_version_store(outer_pin)?;
    let active_id = active.info.id;
    // forget the versions of inner maps an earlier run left (freed shadows)
    let stale: Vec<u32> = version_ids(versions.as_fd())
        .map_err(kernel("reading the version store"))?
        .into_iter()
        .filter(|id| *id != active_id)
        .collect();
    for id in stale {
        let _ = sys::delete(versions.as_fd(), &id.to_ne_bytes());
    }
    let version =
        match read_version(versions.as_fd(), active_id).map_err(kernel("reading the version"))? {
            Some(version) => version,
            None => {
                write_version(versions.as_fd(), active_id, FIRST_VERSION)
                    .map_err(kernel("writing the version"))?;
                FIRST_VERSION
            }
        };
    let shadow = create_shadow(&raw, flags).map_err(kernel("creating the shadow inner map"))?;
    let shadow_id = open::map_id(shadow.as_fd())?;
    tracing::info!(
        map = name, pin = %outer_pin.display(), active_id, shadow_id, version,
        "switchable map adopted"
    );
    Ok((
        active,
        SwitchSet {
            outer_pin: outer_pin.to_owned(),
            outer,
            versions,
            shadow,
            shadow_id,
            version,
        },
    ))
}

/// A new inner map of the active one's shape, flags and BTF (without the
/// BTF if the kernel refuses it: typed output is a view, not a reason to
/// fail).
fn create_shadow(raw: &sys::RawMapInfo, flags: u32) -> std::io::Result<OwnedFd> {
    let mut spec = sys::MapCreate {
        map_type: raw.map_type,
        key_size: raw.key_size,
        value_size: raw.value_size,
        max_entries: raw.max_entries,
        map_flags: flags,
        inner_map_fd: None,
        name: raw.name.clone(),
        btf: None,
    };
    let btf = (raw.btf_id != 0 && raw.btf_key_type_id != 0 && raw.btf_value_type_id != 0)
        .then(|| sys::btf_fd_by_id(raw.btf_id).ok())
        .flatten();
    if let Some(btf) = &btf {
        spec.btf = Some((btf.as_raw_fd(), raw.btf_key_type_id, raw.btf_value_type_id));
        match sys::map_create(&spec) {
            Ok(fd) => return Ok(fd),
            Err(error) => {
                tracing::debug!(%error, "shadow with BTF refused, creating it without");
                spec.btf = None;
            }
        }
    }
    sys::map_create(&spec)
}

impl SwitchSet {
    /// Records `version` as the shadow's, before it is switched in: a
    /// program that finds the shadow in slot 0 then reads its version.
    pub(crate) fn stamp_shadow(&self, version: u64) -> std::io::Result<()> {
        write_version(self.versions.as_fd(), self.shadow_id, version)
    }

    /// The id of the inner map slot 0 holds now.
    pub(crate) fn slot_id(&self) -> std::io::Result<Option<u32>> {
        sys::outer_slot(self.outer.as_fd(), ACTIVE_SLOT)
    }

    /// Points slot 0 at the shadow: the one visible step of an apply. When
    /// this returns, no non-sleepable program runs with the old active map.
    pub(crate) fn switch_to_shadow(&self) -> std::io::Result<()> {
        sys::set_outer_slot(self.outer.as_fd(), ACTIVE_SLOT, self.shadow.as_fd())
    }
}
