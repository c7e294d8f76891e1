//! The few raw `bpf()` commands mapsync needs that aya 0.14 does not offer
//! on untyped maps: lookups by byte key, `BPF_MAP_LOOKUP_BATCH`, next-key
//! iteration, object pins and map info.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr` as bytes: every command here fits in 64.
#[repr(C, align(8))]
struct Attr([u8; 64]);

impl Attr {
    fn new() -> Self {
        Self([0; 64])
    }
    fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }
    fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }
    fn get_u32(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0[offset..offset + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable buffer of the size passed, and
    // every pointer stored in it by the callers points to live buffers of
    // the sizes the kernel expects for the command.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// `BPF_OBJ_GET`: opens a pinned object (map, program or link).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut attr = Attr::new();
    attr.put_u64(0, path.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut attr).map(owned)
}

/// `BPF_MAP_GET_FD_BY_ID`.
pub fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, id);
    bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).map(owned)
}

/// Whether `fd` refers to a BPF map (and not a program or link).
pub fn is_map_fd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|target| target.to_string_lossy() == "anon_inode:bpf-map")
        .unwrap_or(false)
}

/// The fields of `struct bpf_map_info` mapsync reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMapInfo {
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Map id.
    pub id: u32,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Kernel name.
    pub name: String,
    /// Id of the BTF object with the key and value types (0: none).
    pub btf_id: u32,
    /// BTF type id of the key (0: none).
    pub btf_key_type_id: u32,
    /// BTF type id of the value (0: none).
    pub btf_value_type_id: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a map fd.
pub fn map_info(fd: BorrowedFd<'_>) -> io::Result<RawMapInfo> {
    let mut info = [0u8; 128];
    let mut attr = Attr::new();
    attr.put_u32(0, fd.as_raw_fd() as u32);
    attr.put_u32(4, info.len() as u32);
    attr.put_u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u32_at = |i: usize| u32::from_ne_bytes(info[i..i + 4].try_into().expect("4 bytes"));
    let name = &info[24..40];
    let name_len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(RawMapInfo {
        map_type: u32_at(0),
        id: u32_at(4),
        key_size: u32_at(8),
        value_size: u32_at(12),
        max_entries: u32_at(16),
        name: String::from_utf8_lossy(&name[..name_len]).into_owned(),
        btf_id: u32_at(64),
        btf_key_type_id: u32_at(68),
        btf_value_type_id: u32_at(72),
    })
}

/// `BPF_BTF_GET_FD_BY_ID`.
pub fn btf_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, id);
    bpf(BPF_BTF_GET_FD_BY_ID, &mut attr).map(owned)
}

/// The raw BTF blob of a BTF object: `BPF_OBJ_GET_INFO_BY_FD` on its fd,
/// once for the size, once with a buffer of that size.
pub fn btf_data(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // struct bpf_btf_info: btf (u64), btf_size (u32), id (u32), ...
    let info_call = |buffer: &mut [u8]| -> io::Result<u32> {
        let mut info = [0u8; 32];
        info[0..8].copy_from_slice(&(buffer.as_mut_ptr() as u64).to_ne_bytes());
        info[8..12].copy_from_slice(&(buffer.len() as u32).to_ne_bytes());
        let mut attr = Attr::new();
        attr.put_u32(0, fd.as_raw_fd() as u32);
        attr.put_u32(4, info.len() as u32);
        attr.put_u64(8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        Ok(u32::from_ne_bytes(info[8..12].try_into().expect("4 bytes")))
    };
    let size = info_call(&mut [])?;
    let mut data = vec![0u8; size as usize];
    let written = info_call(&mut data)?;
    data.truncate(written as usize);
    Ok(data)
}

/// `BPF_MAP_LOOKUP_ELEM`: the value of `key`, `None` if absent. `value` must
/// be the map's value size in syscall layout.
pub fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = Attr::new();
    attr.put_u32(0, fd.as_raw_fd() as u32);
    attr.put_u64(8, key.as_ptr() as u64);
    attr.put_u64(16, value.as_mut_ptr() as u64);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(error) => Err(error),
    }
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first with `None`);
/// `false` at the end.
pub fn next_key(fd: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let mut attr = Attr::new();
    attr.put_u32(0, fd.as_raw_fd() as u32);
    attr.put_u64(8, key.map_or(0, |k| k.as_ptr() as u64));
    attr.put_u64(16, next.as_mut_ptr() as u64);
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Outcome of one `BPF_MAP_LOOKUP_BATCH` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRead {
    /// Entries written to the key and value buffers.
    pub count: u32,
    /// Whether the map has no more entries after these.
    pub done: bool,
}

/// `BPF_MAP_LOOKUP_BATCH`: up to `keys.len() / key_size` entries after the
/// position `in_batch` (`None`: from the start); the next position is written
/// to `out_batch` (8 bytes hold any kernel's token).
pub fn lookup_batch(
    fd: BorrowedFd<'_>,
    in_batch: Option<&[u8; 8]>,
    out_batch: &mut [u8; 8],
    keys: &mut [u8],
    values: &mut [u8],
    max: u32,
) -> io::Result<BatchRead> {
    let mut attr = Attr::new();
    attr.put_u64(0, in_batch.map_or(0, |b| b.as_ptr() as u64));
    attr.put_u64(8, out_batch.as_mut_ptr() as u64);
    attr.put_u64(16, keys.as_mut_ptr() as u64);
    attr.put_u64(24, values.as_mut_ptr() as u64);
    attr.put_u32(32, max);
    attr.put_u32(36, fd.as_raw_fd() as u32);
    match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(_) => Ok(BatchRead {
            count: attr.get_u32(32),
            done: false,
        }),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(BatchRead {
            count: attr.get_u32(32),
            done: true,
        }),
        Err(error) => Err(error),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `BPF_MAP_UPDATE_ELEM` with the kernel's flags (`BPF_ANY` 0,
/// `BPF_NOEXIST` 1, `BPF_EXIST` 2).
pub fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.put_u32(0, fd.as_raw_fd() as u32);
    attr.put_u64(8, key.as_ptr() as u64);
    attr.put_u64(16, value.as_ptr() as u64);
    attr.put_u64(24, flags);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM`.
pub fn delete(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.put_u32(0, fd.as_raw_fd() as u32);
    attr.put_u64(8, key.as_ptr() as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_UPDATE_BATCH` of `count` keys and values laid out back to back.
/// Returns how many the kernel processed, and its error if it stopped early.
pub fn update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> (u32, io::Result<()>) {
    let mut attr = Attr::new();
    attr.put_u64(16, keys.as_ptr() as u64);
    attr.put_u64(24, values.as_ptr() as u64);
    attr.put_u32(32, count);
    attr.put_u32(36, fd.as_raw_fd() as u32);
    let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr).map(drop);
    (attr.get_u32(32), result)
}

/// `BPF_MAP_DELETE_BATCH` of `count` keys laid out back to back.
pub fn delete_batch(fd: BorrowedFd<'_>, keys: &[u8], count: u32) -> (u32, io::Result<()>) {
    let mut attr = Attr::new();
    attr.put_u64(16, keys.as_ptr() as u64);
    attr.put_u32(32, count);
    attr.put_u32(36, fd.as_raw_fd() as u32);
    let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr).map(drop);
    (attr.get_u32(32), result)
}

// ---- switchable maps (`switch.rs`): creating maps, pinning, outer slots ----

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;

/// `BPF_F_INNER_MAP`: an array created with it may stand in an outer map's
/// slot whatever its `max_entries` (the template's flag must match).
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

/// What `BPF_MAP_CREATE` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapCreate {
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size.
    pub key_size: u32,
    /// Value size (map-of-maps: 4, the inner map's fd).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags`.
    pub map_flags: u32,
    /// The inner map template of a map-of-maps (an fd), else `None`.
    pub inner_map_fd: Option<RawFd>,
    /// Kernel name (at most 15 bytes are kept).
    pub name: String,
    /// BTF object and key / value type ids, for maps that carry types.
    pub btf: Option<(RawFd, u32, u32)>,
}

/// `BPF_MAP_CREATE`.
pub fn map_create(spec: &MapCreate) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, spec.map_type);
    attr.put_u32(4, spec.key_size);
    attr.put_u32(8, spec.value_size);
    attr.put_u32(12, spec.max_entries);
    attr.put_u32(16, spec.map_flags);
    attr.put_u32(20, spec.inner_map_fd.map_or(0, |fd| fd as u32));
    // map_name[16] at 28, NUL-terminated: letters, digits, '_' and '.' only
    let name: Vec<u8> = spec
        .name
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .take(15)
        .collect();
    attr.0[28..28 + name.len()].copy_from_slice(&name);
    if let Some((btf_fd, key_type, value_type)) = spec.btf {
        attr.put_u32(48, btf_fd as u32);
        attr.put_u32(52, key_type);
        attr.put_u32(56, value_type);
    }
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// `BPF_OBJ_PIN`: pins the object behind `fd` at `path` (on bpffs).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut attr = Attr::new();
    attr.put_u64(0, path.as_ptr() as u64);
    attr.put_u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// The `map_flags` of the map behind `fd` (`struct bpf_map_info` at 20).
pub fn map_flags(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = [0u8; 128];
    let mut attr = Attr::new();
    attr.put_u32(0, fd.as_raw_fd() as u32);
    attr.put_u32(4, info.len() as u32);
    attr.put_u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(u32::from_ne_bytes(
        info[20..24].try_into().expect("4 bytes"),
    ))
}

/// The id of the inner map in slot `slot` of an `ARRAY_OF_MAPS` (user space
/// writes an outer slot with an inner map's fd and reads back its id);
/// `None` for an empty slot.
pub fn outer_slot(outer: BorrowedFd<'_>, slot: u32) -> io::Result<Option<u32>> {
    let mut id = [0u8; 4];
    Ok(lookup(outer, &slot.to_ne_bytes(), &mut id)?.then(|| u32::from_ne_bytes(id)))
}

/// Points slot `slot` of an outer map at the map `inner`: one
/// `BPF_MAP_UPDATE_ELEM`, which returns once no non-sleepable program still
/// runs with the map the slot held before (the kernel's RCU wait).
pub fn set_outer_slot(outer: BorrowedFd<'_>, slot: u32, inner: BorrowedFd<'_>) -> io::Result<()> {
    let fd = inner.as_raw_fd() as u32;
    update(outer, &slot.to_ne_bytes(), &fd.to_ne_bytes(), 0)
}
