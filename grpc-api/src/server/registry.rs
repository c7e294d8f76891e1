//! The open connections, counted against `max_connections`. At the limit, a
//! new connection takes the place of one that carries nothing (no stream
//! open: an idle client, or a socket that never spoke HTTP/2), so idle
//! sockets cannot lock clients out; only when every connection carries a
//! stream is the new one refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Connections that may be closing (evicted, not yet gone) on top of
/// `max_connections`: an evicted connection ends on its next poll, so this
/// slack is only ever used for an instant.
pub(crate) const EVICTION_SLACK: usize = 16;

/// What the accept loop and the connection task share about a connection.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    /// Open streams (calls) of the connection.
    pub(crate) streams: Arc<watch::Sender<usize>>,
    /// Whether the client's HTTP/2 handshake has arrived.
    pub(crate) handshake_done: Arc<AtomicBool>,
    /// Signaled when the connection is to make room for a new one.
    pub(crate) evict: Notify,
    evicted: AtomicBool,
    opened: Instant,
}

impl ConnectionState {
    fn new() -> Self {
        Self {
            streams: Arc::new(watch::channel(0).0),
            handshake_done: Arc::new(AtomicBool::new(false)),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
            opened: Instant::now(),
        }
    }

    fn carries_nothing(&self) -> bool {
        *self.streams.borrow() == 0 && !self.evicted.load(Ordering::Relaxed)
    }
}

/// The open connections.
#[derive(Debug)]
pub(crate) struct Registry {
    max: usize,
    inner: Mutex<Inner>,
    /// Signaled whenever a connection is gone.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<ConnectionState>>,
}

/// A connection's place in the registry, given up when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    registry: Arc<Registry>,
    id: u64,
    /// The connection's shared state.
    pub(crate) state: Arc<ConnectionState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
        self.registry.freed.notify_waiters();
    }
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every connection carries a stream.
    Busy,
    /// Evicted connections have yet to close: room comes in an instant.
    Closing,
}

impl Registry {
    /// A registry admitting `max` connections.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a new connection: below the limit at once; at it, by evicting
    /// the connection that carries nothing and has been open longest
    /// (preferring one whose handshake never arrived). `Err(Full)` when
    /// every connection carries a stream.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut inner = self.lock();
        if inner.open.len() >= self.max {
            if inner.open.len() >= self.max + EVICTION_SLACK {
                return Err(Full::Closing);
            }
            let victim = inner
                .open
                .values()
                .filter(|state| state.carries_nothing())
                .min_by_key(|state| (state.handshake_done.load(Ordering::Relaxed), state.opened))
                .ok_or(Full::Busy)?;
            victim.evicted.store(true, Ordering::Relaxed);
            victim.evict.notify_one();
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnectionState::new());
        inner.open.insert(id, state.clone());
        Ok(Slot {
            registry: self.clone(),
            id,
            state,
        })
    }

    /// Admits a new connection like [`Registry::admit`], waiting up to
    /// `patience` for evicted connections to close when they are what keeps
    /// it out.
    pub(crate) async fn admit_within(
        self: &Arc<Self>,
        patience: std::time::Duration,
    ) -> Result<Slot, Full> {
        let deadline = Instant::now() + patience;
        loop {
            let freed = self.freed.notified();
            match self.admit() {
                Err(Full::Closing) if Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, freed).await;
                }
                result => return result,
            }
        }
    }

    /// Connections open (including ones closing after an eviction).
    pub(crate) fn len(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_oldest_connection_without_streams_makes_room() {
        let registry = Registry::new(2);
        let busy = registry.admit().expect("room");
        busy.state.streams.send_modify(|open| *open += 1);
        let idle = registry.admit().expect("room");
        idle.state.handshake_done.store(true, Ordering::Relaxed);
        let third = registry.admit().expect("evicts the idle one");
        assert!(idle.state.evicted.load(Ordering::Relaxed));
        assert!(
            !busy.state.evicted.load(Ordering::Relaxed),
            "a busy one stays"
        );
        drop(idle);
        assert_eq!(registry.len(), 2);
        // the two left both carry a stream: the next one is refused
        third.state.streams.send_modify(|open| *open += 1);
        assert_eq!(registry.admit().unwrap_err(), Full::Busy);
        drop(busy);
        assert!(registry.admit().is_ok(), "room again");
    }

    #[test]
    fn a_connection_that_never_spoke_goes_first() {
        let registry = Registry::new(2);
        let spoke = registry.admit().expect("room");
        spoke.state.handshake_done.store(true, Ordering::Relaxed);
        let silent = registry.admit().expect("room");
        let _new = registry.admit().expect("evicts");
        assert!(silent.state.evicted.load(Ordering::Relaxed));
        assert!(!spoke.state.evicted.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn while_evicted_connections_close_a_new_one_waits_for_them() {
        let registry = Registry::new(1);
        let mut slots: Vec<Slot> = (0..=EVICTION_SLACK)
            .map(|_| registry.admit().expect("room, by eviction"))
            .collect();
        assert_eq!(registry.admit().unwrap_err(), Full::Closing);
        let patience = std::time::Duration::from_secs(5);
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move { registry.admit_within(patience).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        // an evicted connection closes: the waiting one gets in
        slots.remove(0);
        assert_eq!(waiting.await.expect("task"), Ok(()));
    }
}
