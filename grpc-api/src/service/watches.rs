//! The watches of one Watch stream, polled by the stream's response side.
//!
//! Each watch is a future (`watcher::Watcher::run`) that sends into the
//! stream's queue (`outbound`). The watches are not tasks of their own: the
//! response stream polls them when the transport asks for its next message,
//! so a delivery goes subscription -> queue -> transport inside the one
//! task that writes the HTTP/2 stream, without a hop through a task per
//! watch. The watches share a [`FuturesUnordered`], which polls each woken
//! watch once per round, and the queue's slots are handed out first come,
//! first served, so a flooded watch does not starve a quiet one on the same
//! stream.
//!
//! A transport that stops asking (its client does not read: no HTTP/2
//! window) must not stop the watches: they still fill the queue up to the
//! budget, see a cancel, and time out `SLOW_CONSUMER`. A watch woken while
//! the response side waits wakes it; the transport may then not poll it
//! (no window), and one woken while the response side has just handed a
//! message out may not be polled either. So every wakeup also marks the
//! set, and the service's one [`Sweeper`] task looks at every stream's set
//! each [`SWEEP_EVERY`]: one marked and not polled since the last sweep is
//! polled by the sweeper itself. Nothing is lost, and a stalled stream's
//! watches run at most about two sweeps late.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

/// How often the sweeper looks for stalled streams.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// The response side is polling the watches now.
const POLLING: u8 = 0;
/// The response side returned `Pending`: it waits to be woken.
const WAITING: u8 = 1;
/// The response side returned a message (or was not polled yet): it polls
/// again if the transport has room.
const HANDED_OUT: u8 = 2;

/// Most rounds over the watches in one poll of the response side; past it
/// the response side yields (watches that keep waking themselves, e.g. at
/// the end of the runtime's cooperative budget, must not keep it busy).
const ROUNDS_PER_POLL: usize = 4;

type WatchFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a woken watch's wakeup goes.
#[derive(Debug)]
struct Signal {
    state: AtomicU8,
    /// A watch was woken since the last round began.
    rewoken: AtomicBool,
    /// The same, for the sweeper (cleared by every round).
    marked: AtomicBool,
    response: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.marked.store(true, Ordering::SeqCst);
        // seen by a response side that is polling (it polls again), or by
        // one turning to waiting (it re-checks after saying so)
        self.rewoken.store(true, Ordering::SeqCst);
        if self.state.load(Ordering::SeqCst) == WAITING {
            self.response.wake();
        }
    }
}

/// One stream's watches.
pub(super) struct WatchSet {
    signal: Arc<Signal>,
    /// Wakes through `signal`; every poll of the watches uses it.
    waker: Waker,
    futures: Mutex<FuturesUnordered<WatchFuture>>,
    /// Rounds over the watches, by the response side or the sweeper.
    rounds: AtomicU64,
    /// `rounds` at the last sweep (the sweeper's).
    swept_at: AtomicU64,
}

impl std::fmt::Debug for WatchSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSet")
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl WatchSet {
    fn new() -> Self {
        let signal = Arc::new(Signal {
            // not polled yet: the sweeper covers wakeups until it is
            state: AtomicU8::new(HANDED_OUT),
            rewoken: AtomicBool::new(false),
            marked: AtomicBool::new(false),
            response: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(signal.clone()),
            signal,
            futures: Mutex::new(FuturesUnordered::new()),
            rounds: AtomicU64::new(0),
            swept_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Adds a watch; it is polled from now on until it ends (or the set is
    /// dropped, with the stream).
    pub(super) fn push(&self, watch: impl Future + Send + 'static) {
        // a panic ends the watch, not the stream's transport
        let watch = std::panic::AssertUnwindSafe(watch)
            .catch_unwind()
            .map(|_| ());
        self.lock().push(Box::pin(watch));
        self.waker.wake_by_ref();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FuturesUnordered<WatchFuture>> {
        self.futures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One round over the woken watches.
    fn round(&self, futures: &mut FuturesUnordered<WatchFuture>) {
        self.rounds.fetch_add(1, Ordering::SeqCst);
        self.signal.rewoken.store(false, Ordering::SeqCst);
        self.signal.marked.store(false, Ordering::SeqCst);
        let mut cx = Context::from_waker(&self.waker);
        while let Poll::Ready(Some(())) = futures.poll_next_unpin(&mut cx) {}
    }

    /// Rounds over the watches so far.
    #[cfg(test)]
    pub(super) fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Polls the watches for the response side, then `take` (the queue);
    /// see the module doc for who is woken when.
    pub(super) fn poll_for_response<T>(
        &self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let signal = &self.signal;
        signal.response.register(cx.waker());
        signal.state.store(POLLING, Ordering::SeqCst);
        let mut rounds = 0;
        loop {
            if let Poll::Ready(taken) = take(cx) {
                // a watch woken meanwhile is polled by the next call, or
                // by the sweeper if the transport does not call again
                signal.state.store(HANDED_OUT, Ordering::SeqCst);
                return Poll::Ready(taken);
            }
            if rounds > 0 && !signal.rewoken.load(Ordering::SeqCst) {
                signal.state.store(WAITING, Ordering::SeqCst);
                if !signal.rewoken.load(Ordering::SeqCst) {
                    return Poll::Pending;
                }
                signal.state.store(POLLING, Ordering::SeqCst);
            }
            if rounds == ROUNDS_PER_POLL {
                signal.state.store(WAITING, Ordering::SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut futures = self.lock();
            self.round(&mut futures);
            drop(futures);
            rounds += 1;
        }
    }

    /// The sweeper's look: polls the watches if one was woken and nobody
    /// polled them since the last sweep.
    fn sweep(&self) {
        let rounds = self.rounds.load(Ordering::SeqCst);
        let before = self.swept_at.swap(rounds, Ordering::SeqCst);
        if !self.signal.marked.load(Ordering::SeqCst) || before != rounds {
            return;
        }
        let mut futures = match self.futures.try_lock() {
            Ok(futures) => futures,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // being polled right now
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        self.round(&mut futures);
        drop(futures);
        self.swept_at
            .store(self.rounds.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// The service's sweeper: polls the watches of streams whose transport
/// stopped asking (see the module doc). One task per service, started with
/// the first stream (and again if its runtime went away).
#[derive(Debug, Default)]
pub(super) struct Sweeper {
    sets: Mutex<Vec<Weak<WatchSet>>>,
    running: Arc<AtomicBool>,
}

impl Sweeper {
    /// A new stream's (empty) set of watches, swept from now on.
    pub(super) fn watch_set(self: &Arc<Self>) -> Arc<WatchSet> {
        let set = Arc::new(WatchSet::new());
        self.sets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::downgrade(&set));
        if !self.running.swap(true, Ordering::SeqCst) {
            let running = Running(self.running.clone());
            tokio::spawn(
                sweep(Arc::downgrade(self), running)
                    .instrument(tracing::info_span!("watch_sweeper")),
            );
        }
        set
    }

    /// The live sets; forgets the others.
    fn live(&self) -> Vec<Arc<WatchSet>> {
        let mut sets = self
            .sets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sets.retain(|set| set.strong_count() > 0);
        sets.iter().filter_map(Weak::upgrade).collect()
    }
}

/// Marks the sweeper stopped when its task ends (or its runtime drops it).
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The sweeper's task: ends with the service.
async fn sweep(sweeper: Weak<Sweeper>, _running: Running) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(sweeper) = sweeper.upgrade() else {
            return;
        };
        let sets = sweeper.live();
        drop(sweeper);
        for set in sets {
            set.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{mpsc, oneshot};

    /// A response side that is never polled: the sweeper runs the watches.
    #[tokio::test]
    async fn watches_run_while_the_response_side_is_not_polled() {
        let sweeper = Arc::new(Sweeper::default());
        let set = sweeper.watch_set();
        let (go, gone) = oneshot::channel::<()>();
        let (done, mut finished) = mpsc::channel(1);
        set.push(async move {
            let _ = gone.await;
            done.send(()).await.expect("receiver open");
        });
        tokio::time::sleep(3 * SWEEP_EVERY).await;
        go.send(()).expect("the watch waits");
        tokio::time::timeout(Duration::from_secs(5), finished.recv())
            .await
            .expect("the sweeper polled the watch")
            .expect("sent");
    }

    /// A response side that waits is woken directly and polls the watches
    /// itself.
    #[tokio::test]
    async fn a_waiting_response_side_polls_the_watches_itself() {
        let sweeper = Arc::new(Sweeper::default());
        let set = sweeper.watch_set();
        let (tx, mut rx) = mpsc::channel::<u32>(4);
        let (go, gone) = oneshot::channel::<()>();
        set.push(async move {
            let _ = gone.await;
            for n in 0..3 {
                tx.send(n).await.expect("open");
            }
        });
        let response = {
            let set = set.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(n) =
                    std::future::poll_fn(|cx| set.poll_for_response(cx, |cx| rx.poll_recv(cx)))
                        .await
                {
                    got.push(n);
                }
                got
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = set.rounds();
        go.send(()).expect("the watch waits");
        let got = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("delivered, then the queue closed")
            .expect("task");
        assert_eq!(got, vec![0, 1, 2]);
        assert!(set.rounds() > before);
    }

    /// A watch that panics ends alone; the others go on.
    #[tokio::test]
    async fn a_panicking_watch_ends_alone() {
        let sweeper = Arc::new(Sweeper::default());
        let set = sweeper.watch_set();
        set.push(async { panic!("a bug in one watch") });
        let (done, mut finished) = mpsc::channel(1);
        set.push(async move {
            done.send(()).await.expect("open");
        });
        tokio::time::timeout(Duration::from_secs(5), finished.recv())
            .await
            .expect("the other watch ran")
            .expect("sent");
    }

    /// Dropping the set (the stream ended) drops its watches, and the
    /// sweeper forgets it.
    #[tokio::test]
    async fn watches_end_with_their_set() {
        let sweeper = Arc::new(Sweeper::default());
        let set = sweeper.watch_set();
        let (held, mut released) = mpsc::channel::<()>(1);
        set.push(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(set);
        assert!(released.recv().await.is_none(), "the watch was dropped");
        assert!(sweeper.live().is_empty());
    }
}
