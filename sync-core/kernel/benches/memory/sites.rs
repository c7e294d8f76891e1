//! `-- sites`: where the allocations of a publish come from. While
//! recording, the counting allocator captures a backtrace of each
//! allocation of the recording thread; the report groups them by their
//! innermost frames outside the allocator and the standard library.
//!
//! Only the bench's diagnostic mode records (capturing a backtrace is slow);
//! the figures of every other mode are unaffected.

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;

thread_local! {
    /// Whether this thread's allocations are recorded now.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Backtraces of the recorded allocations.
static SITES: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());

/// Called by the allocator for each allocation: captures a backtrace if the
/// calling thread records (with recording off meanwhile, since capturing
/// and keeping it allocate too).
pub fn on_alloc() {
    if !RECORDING.try_with(|on| on.replace(false)).unwrap_or(false) {
        return;
    }
    let trace = Backtrace::force_capture();
    if let Ok(mut sites) = SITES.lock() {
        sites.push(trace);
    }
    RECORDING.with(|on| on.set(true));
}

/// Runs `work` with this thread's allocations recorded.
pub fn record<T>(work: impl FnOnce() -> T) -> T {
    RECORDING.with(|on| on.set(true));
    let out = work();
    RECORDING.with(|on| on.set(false));
    out
}

/// Frames that say nothing about who allocated.
fn is_plumbing(function: &str) -> bool {
    const PLUMBING: [&str; 12] = [
        "std::",
        "core::",
        "alloc::",
        "<alloc::",
        "<core::",
        "<std::",
        "__rust",
        "__rdl",
        "memory::sites::",
        "<memory::",
        "memory::Counting",
        "rust_begin_unwind",
    ];
    PLUMBING.iter().any(|prefix| function.starts_with(prefix))
}

/// Whether `function` is the project's own code or its persistent maps'.
fn is_ours(function: &str) -> bool {
    ["mapsync_", "<mapsync_", "imbl::", "<imbl::"]
        .iter()
        .any(|prefix| function.starts_with(prefix))
}

/// Prints the recorded allocations per `runs`, grouped by what allocated
/// (the innermost frame outside the allocator and the standard library)
/// and the two innermost frames of mapsync's own code (or `imbl`) that led
/// there (function names only), most frequent first.
pub fn report(what: &str, runs: usize) {
    let sites = std::mem::take(&mut *SITES.lock().expect("not poisoned"));
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for trace in &sites {
        let text = trace.to_string();
        let functions: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim_start().split_once(": ").map(|(_, f)| f))
            .filter(|function| !function.starts_with("./") && !is_plumbing(function))
            .collect();
        let what = functions.first().copied().unwrap_or("?");
        let mut key = vec![what];
        key.extend(
            functions
                .iter()
                .filter(|function| is_ours(function) && **function != what)
                .take(2),
        );
        *groups.entry(key.join("  <-  ")).or_default() += 1;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|group| std::cmp::Reverse(group.1));
    println!(
        "allocation sites of {runs} {what}: {} allocations ({:.1} per publish)",
        sites.len(),
        sites.len() as f64 / runs as f64
    );
    for (frames, count) in groups {
        println!(
            "  {:>6.2} per publish: {frames}",
            count as f64 / runs as f64
        );
    }
}
