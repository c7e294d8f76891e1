//! Opening the maps to mirror, by pin path or id, and learning their shape.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mapsync_ebpf::abi;

use super::sys;
use crate::error::KernelError;
use mapsync_core::btf::{Btf, MapTypes};
use mapsync_core::map_info::{MapInfo, MapKind};

/// Where a mirrored map comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSource {
    /// A map pinned in bpffs.
    Pin(PathBuf),
    /// A map by kernel id.
    Id(u32),
    /// A switchable map: the pin of its outer `ARRAY_OF_MAPS`, whose slot 0
    /// holds the active inner map (see `switch.rs`). Mirrored as one
    /// logical map, the active set; written with an atomic apply.
    Switch(PathBuf),
}

/// A map to mirror: the name to serve it under and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// Name clients use.
    pub name: String,
    /// Where the map is.
    pub source: MapSource,
    /// Poll the map this often: its only source for values changed in
    /// place through lookup pointers and for LRU evictions.
    pub poll_interval: Option<std::time::Duration>,
}

impl MapSpec {
    /// A pinned map; the name defaults to the pin's file name.
    pub fn pin(name: Option<&str>, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = name.map(str::to_owned).unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        });
        Self {
            name,
            source: MapSource::Pin(path),
            poll_interval: None,
        }
    }

    /// A map by id; the name defaults to the kernel's name of the map.
    pub fn id(name: Option<&str>, id: u32) -> Self {
        Self {
            name: name.map(str::to_owned).unwrap_or_default(),
            source: MapSource::Id(id),
            poll_interval: None,
        }
    }

    /// A switchable map whose outer map is pinned at `outer_pin`; the name
    /// defaults to the pin's file name.
    pub fn switch(name: Option<&str>, outer_pin: impl Into<PathBuf>) -> Self {
        let spec = Self::pin(name, outer_pin);
        Self {
            source: MapSource::Switch(match spec.source {
                MapSource::Pin(path) => path,
                other => unreachable!("pin() gives a pin, not {other:?}"),
            }),
            ..spec
        }
    }

    /// The same map, polled every `interval`.
    pub fn polled(mut self, interval: std::time::Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }
}

/// An open map: its fd and shape.
#[derive(Debug)]
pub struct OpenMap {
    /// Shape and names.
    pub info: MapInfo,
    /// The map's fd.
    pub fd: OwnedFd,
}

/// Number of possible CPUs: the slot count of per-CPU values.
pub fn possible_cpus() -> Result<usize, KernelError> {
    aya::util::nr_cpus().map_err(|(what, source)| KernelError::Host {
        what: if what.is_empty() {
            "possible CPUs"
        } else {
            "reading /sys/devices/system/cpu/possible"
        },
        source,
    })
}

/// Opens the map `spec` names and checks mapsync can mirror it.
pub fn open(spec: &MapSpec) -> Result<OpenMap, KernelError> {
    let fd = match &spec.source {
        MapSource::Pin(path) => open_pin(path)?,
        MapSource::Id(id) => {
            sys::map_fd_by_id(*id).map_err(|source| KernelError::OpenId { id: *id, source })?
        }
        MapSource::Switch(outer_pin) => {
            return crate::switch::open_active(&spec.name, outer_pin);
        }
    };
    describe(&spec.name, fd)
}

/// The kernel id of the map an open map fd refers to.
pub fn map_id(fd: std::os::fd::BorrowedFd<'_>) -> Result<u32, KernelError> {
    sys::map_info(fd)
        .map(|raw| raw.id)
        .map_err(|source| KernelError::Syscall {
            op: "BPF_OBJ_GET_INFO_BY_FD",
            source,
        })
}

/// Reads the shape of the map behind `fd` and checks mapsync can mirror it;
/// `name` is the name to serve it under (empty: the kernel's name).
pub fn describe(name: &str, fd: OwnedFd) -> Result<OpenMap, KernelError> {
    let raw = sys::map_info(fd.as_fd()).map_err(|source| KernelError::Syscall {
        op: "BPF_OBJ_GET_INFO_BY_FD",
        source,
    })?;
    let kind = MapKind::from_raw(raw.map_type);
    let name = if name.is_empty() {
        raw.name.clone()
    } else {
        name.to_owned()
    };
    if !kind.is_supported() {
        return Err(KernelError::UnsupportedKind { name, kind });
    }
    let value_bytes = if kind.is_per_cpu() {
        (raw.value_size.div_ceil(8) * 8) * possible_cpus()? as u32
    } else {
        raw.value_size
    };
    if raw.key_size as usize > abi::KEY_MAX {
        return Err(KernelError::TooLarge {
            name,
            what: "key",
            size: raw.key_size,
            max: abi::KEY_MAX,
        });
    }
    if value_bytes as usize > abi::VALUE_MAX {
        return Err(KernelError::TooLarge {
            name,
            what: "value",
            size: value_bytes,
            max: abi::VALUE_MAX,
        });
    }
    let types = map_types(&name, &raw);
    Ok(OpenMap {
        info: MapInfo {
            name,
            id: raw.id,
            kernel_name: raw.name,
            kind,
            key_size: raw.key_size,
            value_size: raw.value_size,
            max_entries: raw.max_entries,
            value_bytes,
            types,
            switchable: false,
        },
        fd,
    })
}

/// Why a map's BTF was not used (logged; the map is then shown as hex).
#[derive(Debug, thiserror::Error)]
enum TypesError {
    #[error("reading BTF object {btf_id}: {source}")]
    Read { btf_id: u32, source: std::io::Error },
    #[error(transparent)]
    Btf(#[from] mapsync_core::btf::BtfError),
}

/// The map's BTF key and value types, when it carries both. BTF that
/// cannot be read or does not fit the map leaves the map untyped (hex only)
/// with a warning: typed output is a view, never a reason not to mirror.
fn map_types(name: &str, raw: &sys::RawMapInfo) -> Option<MapTypes> {
    if raw.btf_id == 0 || raw.btf_key_type_id == 0 || raw.btf_value_type_id == 0 {
        return None;
    }
    let read = || -> Result<MapTypes, TypesError> {
        let data = sys::btf_fd_by_id(raw.btf_id)
            .and_then(|fd| sys::btf_data(fd.as_fd()))
            .map_err(|source| TypesError::Read {
                btf_id: raw.btf_id,
                source,
            })?;
        Ok(MapTypes::new(
            Arc::new(Btf::parse(&data)?),
            raw.btf_id,
            raw.btf_key_type_id,
            raw.btf_value_type_id,
            raw.key_size,
            raw.value_size,
        )?)
    };
    read()
        .inspect_err(|error| {
            tracing::warn!(map = name, %error, "map BTF unusable: keys and values will be hex only");
        })
        .ok()
}

/// Opens a pinned object and checks it is a map (`BPF_OBJ_GET`).
pub fn open_pin(path: &Path) -> Result<OwnedFd, KernelError> {
    let fd = sys::obj_get(path).map_err(|source| KernelError::OpenPin {
        path: path.to_owned(),
        source,
    })?;
    if !sys::is_map_fd(fd.as_fd()) {
        return Err(KernelError::NotAMap {
            path: path.to_owned(),
        });
    }
    Ok(fd)
}
