//! What mapsync knows about a mirrored kernel map: kind, sizes and, when the
//! map carries BTF, its key and value types.

use std::fmt;

use crate::btf::{BtfError, MapTypes, TypedValue};

/// The kind of a BPF map (`enum bpf_map_type`), as far as mapsync cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`
    Hash,
    /// `BPF_MAP_TYPE_ARRAY`
    Array,
    /// `BPF_MAP_TYPE_PERCPU_HASH`
    PercpuHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`
    PercpuArray,
    /// `BPF_MAP_TYPE_LRU_HASH`
    LruHash,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`
    LruPercpuHash,
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`
    ArrayOfMaps,
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`
    HashOfMaps,
    /// Any other kind, by its number; mapsync refuses to mirror these.
    Other(u32),
}

impl MapKind {
    /// Decodes `enum bpf_map_type`.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            1 => Self::Hash,
            2 => Self::Array,
            5 => Self::PercpuHash,
            6 => Self::PercpuArray,
            9 => Self::LruHash,
            10 => Self::LruPercpuHash,
            12 => Self::ArrayOfMaps,
            13 => Self::HashOfMaps,
            other => Self::Other(other),
        }
    }

    /// Whether values hold one slot per possible CPU.
    pub fn is_per_cpu(self) -> bool {
        matches!(
            self,
            Self::PercpuHash | Self::PercpuArray | Self::LruPercpuHash
        )
    }

    /// Whether values are inner map ids (written as fds, read as ids).
    pub fn is_map_of_maps(self) -> bool {
        matches!(self, Self::ArrayOfMaps | Self::HashOfMaps)
    }

    /// Whether keys are indexes `0..max_entries` (array kinds): a write
    /// past the end is refused with E2BIG.
    pub fn is_array_like(self) -> bool {
        matches!(self, Self::Array | Self::PercpuArray | Self::ArrayOfMaps)
    }

    /// Whether every index always holds a value (plain and per-CPU arrays):
    /// an entry cannot be deleted and a `NOEXIST` put is always refused
    /// (EEXIST). An array of maps has empty slots: it is array-like without
    /// this.
    pub fn holds_every_index(self) -> bool {
        matches!(self, Self::Array | Self::PercpuArray)
    }

    /// Whether this version of mapsync can mirror the kind.
    pub fn is_supported(self) -> bool {
        !matches!(self, Self::Other(_))
    }

    /// The kernel's name of the kind.
    pub fn name(self) -> String {
        match self {
            Self::Hash => "hash".into(),
            Self::Array => "array".into(),
            Self::PercpuHash => "percpu_hash".into(),
            Self::PercpuArray => "percpu_array".into(),
            Self::LruHash => "lru_hash".into(),
            Self::LruPercpuHash => "lru_percpu_hash".into(),
            Self::ArrayOfMaps => "array_of_maps".into(),
            Self::HashOfMaps => "hash_of_maps".into(),
            Self::Other(raw) => format!("type {raw}"),
        }
    }
}

impl fmt::Display for MapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A mirrored map's identity and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    /// Name mapsync serves it under (configured, or the pin's file name).
    pub name: String,
    /// Kernel map id.
    pub id: u32,
    /// Name the kernel knows it by (at most 15 bytes).
    pub kernel_name: String,
    /// Kind of map.
    pub kind: MapKind,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes, as declared (one CPU's slot for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Bytes of one value as lookups and events carry it: `value_size`, or
    /// for per-CPU maps `possible CPUs * round_up(value_size, 8)`.
    pub value_bytes: u32,
    /// The key and value types, when the map carries BTF for both
    /// (`None`: the map's data is shown as hex only).
    pub types: Option<MapTypes>,
    /// Whether the map is switchable: an outer map-of-maps whose active
    /// inner map holds the content (`id` is then the active inner map's),
    /// written as a whole with an atomic apply.
    pub switchable: bool,
}

impl MapInfo {
    /// A map description with the shape given: id 0, kernel name = `name`
    /// (cut to the kernel's 15 bytes), one value of `value_size` bytes (set
    /// [`MapInfo::with_value_bytes`] for per-CPU maps), no BTF types. The
    /// kernel side fills every field from the map itself; this is for
    /// mirrors fed directly (tests, other sources).
    pub fn new(
        name: impl Into<String>,
        kind: MapKind,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Self {
        let name = name.into();
        let mut kernel_name = name.clone();
        let mut cut = kernel_name.len().min(15);
        while !kernel_name.is_char_boundary(cut) {
            cut -= 1;
        }
        kernel_name.truncate(cut);
        Self {
            name,
            id: 0,
            kernel_name,
            kind,
            key_size,
            value_size,
            max_entries,
            value_bytes: value_size,
            types: None,
            switchable: false,
        }
    }

    /// The same description with kernel map id `id`.
    pub fn with_id(mut self, id: u32) -> Self {
        self.id = id;
        self
    }

    /// The same description with values of `value_bytes` bytes as lookups
    /// carry them (per-CPU maps: every CPU's slot).
    pub fn with_value_bytes(mut self, value_bytes: u32) -> Self {
        self.value_bytes = value_bytes;
        self
    }

    /// The same description marked switchable.
    pub fn switchable(mut self) -> Self {
        self.switchable = true;
        self
    }

    /// The same description with BTF key and value types.
    pub fn with_types(mut self, types: MapTypes) -> Self {
        self.types = Some(types);
        self
    }

    /// The key decoded with the map's BTF; `None` when the map has none.
    pub fn decode_key(&self, key: &[u8]) -> Option<Result<TypedValue, BtfError>> {
        self.types.as_ref().map(|types| types.decode_key(key))
    }

    /// A value (syscall layout) decoded with the map's BTF: per-CPU maps
    /// give [`TypedValue::PerCpu`]. `None` when the map has no BTF.
    pub fn decode_value(&self, value: &[u8]) -> Option<Result<TypedValue, BtfError>> {
        let types = self.types.as_ref()?;
        Some(if self.kind.is_per_cpu() {
            types.decode_per_cpu(value, self.value_size.div_ceil(8) as usize * 8)
        } else {
            types.decode_value(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_kinds_are_array_like_and_hash_kinds_are_not() {
        for kind in [MapKind::Array, MapKind::PercpuArray, MapKind::ArrayOfMaps] {
            assert!(kind.is_array_like(), "{kind}");
        }
        assert!(MapKind::Array.holds_every_index() && MapKind::PercpuArray.holds_every_index());
        assert!(
            !MapKind::ArrayOfMaps.holds_every_index(),
            "its slots can be empty"
        );
        for kind in [
            MapKind::Hash,
            MapKind::PercpuHash,
            MapKind::LruHash,
            MapKind::LruPercpuHash,
            MapKind::HashOfMaps,
            MapKind::Other(27),
        ] {
            assert!(!kind.is_array_like() && !kind.holds_every_index(), "{kind}");
        }
    }

    #[test]
    fn new_describes_a_map_fed_directly_with_a_kernel_sized_name() {
        let info = MapInfo::new("counts", MapKind::Hash, 4, 8, 16).with_id(7);
        assert_eq!(
            (info.id, info.kernel_name.as_str(), info.value_bytes),
            (7, "counts", 8)
        );
        assert!(info.types.is_none());
        // the kernel keeps 15 bytes of a name, cut on a character boundary
        let long = MapInfo::new("a_rather_long_map_name", MapKind::Hash, 4, 8, 16);
        assert_eq!(long.kernel_name, "a_rather_long_m");
        let wide = MapInfo::new("ééééééééé", MapKind::Hash, 4, 8, 16);
        assert_eq!(wide.kernel_name, "ééééééé");
        let per_cpu = MapInfo::new("hits", MapKind::PercpuArray, 4, 4, 1).with_value_bytes(32);
        assert_eq!((per_cpu.value_size, per_cpu.value_bytes), (4, 32));
    }
}
