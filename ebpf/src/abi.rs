//! Rust mirror of `include/mapsync.h`: record layout, limits and map names.
//!
//! The header is the definition; this module follows it, and a test reads
//! the header to check the constants agree.

/// Version of the record layout (`MAPSYNC_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;
/// Largest key a record carries (`MAPSYNC_KEY_MAX`).
pub const KEY_MAX: usize = 256;
/// Largest value a record carries, in syscall layout (`MAPSYNC_VALUE_MAX`).
pub const VALUE_MAX: usize = 4096;
/// Default ring size in bytes (`MAPSYNC_RINGBUF_BYTES`).
pub const RINGBUF_BYTES: u32 = 4 * 1024 * 1024;
/// Most maps the syscall trace watches at once (`MAPSYNC_WATCHED_MAX`).
pub const WATCHED_MAX: u32 = 1024;

/// Name of the shared ring buffer.
pub const EVENTS_MAP: &str = "mapsync_events";
/// Name of the shared per-CPU drop counter.
pub const DROPS_MAP: &str = "mapsync_drops";
/// Name of the shared per-CPU sequence counter.
pub const SEQS_MAP: &str = "mapsync_seqs";
/// Name of the trace's watched-map hash (map id -> [`WatchEntry`]).
pub const WATCHED_MAP: &str = "mapsync_watched";

/// `enum mapsync_op`: what a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordOp {
    /// `MAPSYNC_OP_PUT`: the key now holds the record's value.
    Put = 1,
    /// `MAPSYNC_OP_DELETE`: the key was removed.
    Delete = 2,
    /// `MAPSYNC_OP_RESYNC`: the map changed in a way the record cannot say.
    Resync = 3,
}

impl RecordOp {
    /// Decodes the wire value, `None` when unknown.
    pub fn from_u8(op: u8) -> Option<Self> {
        match op {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::Resync),
            _ => None,
        }
    }
}

/// `enum mapsync_source`: which capture source produced a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordSource {
    /// `MAPSYNC_SOURCE_EMIT`: a BPF program through `mapsync_update()`.
    Emit = 1,
    /// `MAPSYNC_SOURCE_TRACE`: the `bpf()` syscall trace.
    Trace = 2,
}

impl RecordSource {
    /// Decodes the wire value, `None` when unknown.
    pub fn from_u8(source: u8) -> Option<Self> {
        match source {
            1 => Some(Self::Emit),
            2 => Some(Self::Trace),
            _ => None,
        }
    }
}

/// `struct mapsync_record_header`, in the ring's native byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct RecordHeader {
    /// Per-CPU sequence number.
    pub seq: u64,
    /// `bpf_ktime_get_ns()` after the write (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel id of the written map.
    pub map_id: u32,
    /// CPU of the sequence number.
    pub cpu: u32,
    /// Bytes of key after the header.
    pub key_size: u16,
    /// Bytes of value after the key.
    pub value_size: u16,
    /// [`RecordOp`] as a byte.
    pub op: u8,
    /// [`RecordSource`] as a byte.
    pub source: u8,
    /// Reserved.
    pub flags: u16,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() == 32);

impl RecordHeader {
    /// Size of the header on the wire.
    pub const SIZE: usize = std::mem::size_of::<Self>();

    /// Reads a header from the start of `bytes` (`None` if too short).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..Self::SIZE)?;
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_ne_bytes(b[i..i + 2].try_into().expect("2 bytes"));
        Some(Self {
            seq: u64_at(0),
            ts_ns: u64_at(8),
            map_id: u32_at(16),
            cpu: u32_at(20),
            key_size: u16_at(24),
            value_size: u16_at(26),
            op: b[28],
            source: b[29],
            flags: u16_at(30),
        })
    }
}

/// `struct mapsync_watch`: the value of `mapsync_watched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct WatchEntry {
    /// The map's key size.
    pub key_size: u32,
    /// Bytes of one value in syscall layout.
    pub value_size: u32,
}

const _: () = assert!(std::mem::size_of::<WatchEntry>() == 8);

impl WatchEntry {
    /// The entry as the bytes the kernel expects.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.key_size.to_ne_bytes());
        out[4..].copy_from_slice(&self.value_size.to_ne_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_define(name: &str) -> String {
        let header = include_str!("../include/mapsync.h");
        let prefix = format!("#define {name} ");
        header
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} not defined in mapsync.h"))
            .trim()
            .to_owned()
    }

    #[test]
    fn constants_match_the_c_header() {
        assert_eq!(
            header_define("MAPSYNC_ABI_VERSION"),
            ABI_VERSION.to_string()
        );
        assert_eq!(header_define("MAPSYNC_KEY_MAX"), KEY_MAX.to_string());
        assert_eq!(header_define("MAPSYNC_VALUE_MAX"), VALUE_MAX.to_string());
        assert_eq!(
            header_define("MAPSYNC_WATCHED_MAX"),
            WATCHED_MAX.to_string()
        );
        assert_eq!(header_define("MAPSYNC_RINGBUF_BYTES"), "(4 * 1024 * 1024)");
        assert_eq!(RINGBUF_BYTES, 4 * 1024 * 1024);
    }

    #[test]
    fn header_round_trips_through_bytes() {
        let mut bytes = vec![0u8; RecordHeader::SIZE];
        bytes[..8].copy_from_slice(&7u64.to_ne_bytes());
        bytes[8..16].copy_from_slice(&99u64.to_ne_bytes());
        bytes[16..20].copy_from_slice(&42u32.to_ne_bytes());
        bytes[20..24].copy_from_slice(&1u32.to_ne_bytes());
        bytes[24..26].copy_from_slice(&4u16.to_ne_bytes());
        bytes[26..28].copy_from_slice(&16u16.to_ne_bytes());
        bytes[28] = RecordOp::Put as u8;
        bytes[29] = RecordSource::Trace as u8;
        let header = RecordHeader::parse(&bytes).expect("long enough");
        assert_eq!(header.seq, 7);
        assert_eq!(header.ts_ns, 99);
        assert_eq!(header.map_id, 42);
        assert_eq!(header.cpu, 1);
        assert_eq!((header.key_size, header.value_size), (4, 16));
        assert_eq!(RecordOp::from_u8(header.op), Some(RecordOp::Put));
        assert_eq!(
            RecordSource::from_u8(header.source),
            Some(RecordSource::Trace)
        );
        assert!(RecordHeader::parse(&bytes[..31]).is_none());
    }

    #[test]
    fn embedded_objects_are_bpf_elf() {
        #[cfg(not(feature = "demo"))]
        let objects = [crate::TRACE_OBJECT];
        #[cfg(feature = "demo")]
        let objects = [crate::TRACE_OBJECT, crate::DEMO_OBJECT, crate::TYPED_OBJECT];
        for object in objects {
            assert_eq!(&object[..4], b"\x7fELF");
            // e_machine at offset 18: EM_BPF = 247
            assert_eq!(u16::from_le_bytes([object[18], object[19]]), 247);
        }
    }

    #[test]
    #[cfg(not(feature = "demo"))]
    fn a_build_without_demo_compiles_only_the_library_objects() {
        let out = std::path::Path::new(env!("OUT_DIR"));
        assert!(out.join("trace.bpf.o").exists());
        for test_only in ["demo.bpf.o", "typed.bpf.o"] {
            assert!(
                !out.join(test_only).exists(),
                "{test_only} built without `demo`"
            );
        }
    }
}
