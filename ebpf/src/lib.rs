//! mapsync's kernel side: BPF object files built from C by this crate's build
//! script, and the change-record ABI they share with user space.
//!
//! # Layout
//! - `include/mapsync.h`: the ABI (record layout, limits, shared maps) and the
//!   *emit* helpers `mapsync_update()` / `mapsync_delete()` for users' programs.
//! - `src/bpf/trace.bpf.c`: the *syscall trace* source ([`TRACE_OBJECT`]).
//! - `src/bpf/dump.bpf.c`: the walk dump of hash maps ([`DUMP_OBJECT`]).
//! - `src/bpf/demo.bpf.c`: the demo writer (`DEMO_OBJECT`, feature `demo`).
//! - `src/bpf/typed.bpf.c`: maps whose keys and values carry BTF, for typed
//!   output and its tests (`TYPED_OBJECT`, feature `demo`).
//! - `src/bpf/blocklist.bpf.c`: the demo's XDP blocklist in a switchable
//!   map (`BLOCKLIST_OBJECT`, feature `demo`).
//! - `src/bpf/switchtest.bpf.c`: the atomicity checker of the switchable-map
//!   tests and benches (`SWITCHTEST_OBJECT`, feature `demo`).
//!
//! The demo and typed objects are for the CLI's `demo` command and tests:
//! without the `demo` feature they are neither built nor embedded (only the trace and dump objects
//! ship in a library build).
//! - [`abi`]: the Rust mirror of `mapsync.h`, with compile-time size checks.
//!
//! The objects are compiled with `clang -target bpf -g -O2` against a
//! `vmlinux.h` generated from the build machine's kernel BTF; they use CO-RE,
//! so the loader (`aya`, given the running kernel's BTF) relocates them.
//!
//! ```
//! // An ELF object, ready for aya::EbpfLoader::load().
//! assert_eq!(&mapsync_ebpf::TRACE_OBJECT[..4], b"\x7fELF");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;

/// Aligns embedded bytes for the ELF parser.
#[repr(C)]
struct Aligned<Bytes: ?Sized> {
    _align: [u64; 0],
    bytes: Bytes,
}

macro_rules! embed_object {
    ($name:literal) => {{
        static OBJECT: &Aligned<[u8]> = &Aligned {
            _align: [],
            bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/", $name)),
        };
        &OBJECT.bytes
    }};
}

/// The syscall-trace object: programs `mapsync_sys_enter_bpf` and
/// `mapsync_sys_exit_bpf` (tracepoints `syscalls/sys_enter_bpf` and
/// `syscalls/sys_exit_bpf`), the private maps `mapsync_watched`,
/// `mapsync_calls`, `mapsync_scratch`, `mapsync_quiet` (the thread whose
/// calls are not traced: mapsync's own writer), and the shared maps of
/// `mapsync.h`.
pub static TRACE_OBJECT: &[u8] = embed_object!("trace.bpf.o");

/// The walk-dump object: the raw tracepoint program `mapsync_dump` (run
/// with `BPF_PROG_TEST_RUN`, never attached) walks the hash map loaded in
/// place of `dump_src` with `bpf_for_each_map_elem` and copies each entry
/// into the mmapable array loaded in place of `dump_out`; the `.rodata`
/// globals `dump_key_size` and `dump_value_size` are set to the map's sizes.
pub static DUMP_OBJECT: &[u8] = embed_object!("dump.bpf.o");

/// The demo object: XDP programs `demo_count` (count packets per IPv4 source
/// into the hash map `demo_pkts`, through `mapsync_update()`) and
/// `demo_forget` (remove the packet's source, through `mapsync_delete()`),
/// `demo_bump` (increment a count in place, invisible to capture), and the
/// raw tracepoint `demo_cpu_hit` (bump the per-CPU array `demo_cpu_hits`).
#[cfg(feature = "demo")]
pub static DEMO_OBJECT: &[u8] = embed_object!("demo.bpf.o");

/// The typed object: no programs, only maps whose keys and values carry BTF
/// (for decoded output and its tests): the hash `typed_flows` (key `struct
/// typed_flow_key { __u32 addr; __u16 port; __u16 proto; }`, value `struct
/// typed_flow_value { __u64 packets; char name[16]; enum typed_verdict
/// verdict; }`), the array `typed_shapes` (one `struct typed_shape` using
/// bitfields, unions, typedefs, qualifiers and nested arrays), and the
/// per-CPU hashes `typed_cpu_counts` (`__u32` -> `__u64`) and
/// `typed_cpu_pairs` (`__u32` -> `struct typed_pair { __u32 first, second; }`).
#[cfg(feature = "demo")]
pub static TYPED_OBJECT: &[u8] = embed_object!("typed.bpf.o");
/// Names of the typed object's maps.
#[cfg(feature = "demo")]
pub const TYPED_MAPS: [&str; 4] = [
    "typed_flows",
    "typed_shapes",
    "typed_cpu_counts",
    "typed_cpu_pairs",
];

/// The switch checker object: XDP programs `switchtest_check_set` (walk
/// keys `0..SWITCHTEST_KEYS` of the active inner map of the switchable map
/// `switchtest_set`, pinned by name, and check every entry carries the same
/// tag and the version `mapsync_version()` reads equals it) and
/// `switchtest_check_plain` (the same walk over the plain hash
/// `switchtest_plain`); counts in the array `switchtest_stats`. Entries are
/// `__u32` keys and 16-byte values (`__u64 tag; __u64 payload;`).
#[cfg(feature = "demo")]
pub static SWITCHTEST_OBJECT: &[u8] = embed_object!("switchtest.bpf.o");
/// Keys the switch checker walks (`SWITCHTEST_KEYS`).
#[cfg(feature = "demo")]
pub const SWITCHTEST_KEYS: u32 = 10_000;
/// Name of the switch checker's outer map (its version store is this name
/// followed by `_version`).
#[cfg(feature = "demo")]
pub const SWITCHTEST_SET_MAP: &str = "switchtest_set";
/// Name of the switch checker's plain map.
#[cfg(feature = "demo")]
pub const SWITCHTEST_PLAIN_MAP: &str = "switchtest_plain";
/// Name of the switch checker's counters: index 0 runs, 1 runs that saw a
/// mix of tags, 2 runs whose version was not the tag, 3 runs missing a key.
#[cfg(feature = "demo")]
pub const SWITCHTEST_STATS_MAP: &str = "switchtest_stats";
/// Name of the checker program over the switchable map.
#[cfg(feature = "demo")]
pub const SWITCHTEST_CHECK_SET: &str = "switchtest_check_set";
/// Name of the checker program over the switchable map, as a tc
/// (sched_cls) program.
#[cfg(feature = "demo")]
pub const SWITCHTEST_CHECK_SET_TC: &str = "switchtest_check_set_tc";
/// Name of the checker program over the plain map.
#[cfg(feature = "demo")]
pub const SWITCHTEST_CHECK_PLAIN: &str = "switchtest_check_plain";

/// The demo blocklist object: the XDP program `demo_block` drops packets
/// whose IPv4 source is a key of the active inner map of the switchable map
/// `demo_blocklist` (pinned by name; `__u32` source in network order ->
/// `__u32`), and counts packets in the hash `demo_verdicts` keyed by
/// `struct { __u64 version; __u32 saddr; __u32 verdict; }` (the version
/// read through `mapsync_version()` for the set the verdict came from).
#[cfg(feature = "demo")]
pub static BLOCKLIST_OBJECT: &[u8] = embed_object!("blocklist.bpf.o");
/// Name of the demo blocklist's outer map.
#[cfg(feature = "demo")]
pub const BLOCKLIST_MAP: &str = "demo_blocklist";
/// Capacity of the demo blocklist's inner maps.
#[cfg(feature = "demo")]
pub const BLOCKLIST_MAX: u32 = 1024;
/// Name of the demo blocklist's program.
#[cfg(feature = "demo")]
pub const BLOCKLIST_PROGRAM: &str = "demo_block";
/// Name of the demo blocklist's verdict counters.
#[cfg(feature = "demo")]
pub const BLOCKLIST_VERDICTS_MAP: &str = "demo_verdicts";

/// Tracepoint category of the trace programs.
pub const TRACE_CATEGORY: &str = "syscalls";
/// Program and tracepoint names of the trace object, in attach order.
pub const TRACE_PROGRAMS: [(&str, &str); 2] = [
    ("mapsync_sys_enter_bpf", "sys_enter_bpf"),
    ("mapsync_sys_exit_bpf", "sys_exit_bpf"),
];
/// Name of the demo's counting program.
#[cfg(feature = "demo")]
pub const DEMO_COUNT_PROGRAM: &str = "demo_count";
/// Name of the demo's deleting program.
#[cfg(feature = "demo")]
pub const DEMO_FORGET_PROGRAM: &str = "demo_forget";
/// Name of the demo's map.
#[cfg(feature = "demo")]
pub const DEMO_MAP: &str = "demo_pkts";
/// Name of the demo's in-place incrementing program (XDP).
#[cfg(feature = "demo")]
pub const DEMO_BUMP_PROGRAM: &str = "demo_bump";
/// Name of the demo's per-CPU hit program (raw tracepoint, test-run only).
#[cfg(feature = "demo")]
pub const DEMO_CPU_HIT_PROGRAM: &str = "demo_cpu_hit";
/// Name of the demo's per-CPU array.
#[cfg(feature = "demo")]
pub const DEMO_CPU_HITS_MAP: &str = "demo_cpu_hits";
