//! Reading the mirror in kernel tests: a map's content as a sorted map of
//! bytes (comparable with [`crate::dump`] of the kernel map), and waiting
//! for a condition with a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mapsync_core::Store;

/// How often [`wait_until`] checks.
const POLL: Duration = Duration::from_millis(10);

/// The content of `map` in the store's current snapshot: key bytes -> value
/// bytes (syscall layout). Panics if the map is not mirrored.
pub fn mirror(store: &Store, map: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    store
        .snapshot()
        .map(map)
        .unwrap_or_else(|| panic!("map `{map}` is not mirrored"))
        .iter()
        .map(|(key, entry)| (key.to_vec(), entry.value.to_vec()))
        .collect()
}

/// Waits until `check` holds, checking every 10 ms; panics naming `what`
/// once `timeout` has passed.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_that_comes_true_ends_the_wait() {
        let mut calls = 0;
        wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never")]
    async fn a_condition_that_never_holds_fails_naming_it() {
        wait_until("never", Duration::from_millis(30), || false).await;
    }
}
