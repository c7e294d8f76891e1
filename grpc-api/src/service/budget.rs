//! The byte budget of watch traffic: every message a watch prepares for its
//! client is charged, by its encoded size, to its stream's budget and to the
//! server's, from the moment it is queued until the transport takes it. A
//! watch that finds no room waits (its subscription is a cursor: it reads
//! nothing more from the change log meanwhile).
//!
//! A stream with nothing charged always has room for one message, whatever
//! the server's budget says, so a client that reads is never starved by
//! clients that do not: it advances one message at a time at worst. The
//! server's total is therefore at most `server_bytes` plus one message per
//! stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::outbound::WatchStats;

/// The server-wide budget, shared by every stream.
#[derive(Debug)]
pub struct ServerBudget {
    limit: usize,
    /// The bytes charged, over all streams (kept in the stats for metrics).
    stats: Arc<WatchStats>,
    room: Notify,
    /// Charges waiting for room on any stream: a release wakes them only
    /// when there are some (`Notify::notify_waiters` takes a lock, and every
    /// message sent releases a charge).
    waiting: AtomicUsize,
}

impl ServerBudget {
    /// A budget of `limit` bytes, counted in `stats`.
    pub fn new(limit: usize, stats: Arc<WatchStats>) -> Self {
        Self {
            limit,
            stats,
            room: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Bytes charged now, over all streams.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.counter().load(Ordering::Relaxed)
    }

    fn counter(&self) -> &AtomicUsize {
        self.stats.bytes_counter()
    }
}

/// One stream's budget, charged together with the server's.
#[derive(Debug)]
pub(super) struct StreamBudget {
    server: Arc<ServerBudget>,
    limit: usize,
    used: AtomicUsize,
    room: Notify,
    /// Charges of this stream waiting for room.
    waiting: AtomicUsize,
}

/// Counts one waiting charge in a stream's and the server's `waiting`
/// while it lives.
struct Waiting<'a>(&'a StreamBudget);

impl<'a> Waiting<'a> {
    fn new(budget: &'a StreamBudget) -> Self {
        budget.waiting.fetch_add(1, Ordering::SeqCst);
        budget.server.waiting.fetch_add(1, Ordering::SeqCst);
        Self(budget)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.server.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes charged to a stream and the server; released when dropped (when
/// the transport takes the message, or when the queue is dropped).
#[derive(Debug)]
pub(super) struct Charge {
    budget: Arc<StreamBudget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl StreamBudget {
    pub(super) fn new(server: Arc<ServerBudget>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            server,
            limit,
            used: AtomicUsize::new(0),
            room: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Bytes charged to this stream now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` once both budgets have room. Cancel-safe: nothing is
    /// charged unless the `Charge` is returned.
    ///
    /// A charge the stream's own budget refused waits for a release on the
    /// stream. One the server's budget refused waits for that too (its
    /// stream alone again always has room) or for a release anywhere, which
    /// wakes one such waiter at a time (`notify_one`, first come first
    /// served): a waiter that then gets its room passes the wakeup on while
    /// room is left, so a release wakes as many as it makes room for, not
    /// every waiting stream on the server.
    pub(super) async fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        // the common case, without registering as a waiter
        let mut refused = match self.try_charge(bytes) {
            Ok(charge) => return charge,
            Err(refused) => refused,
        };
        // counted before the wakeups are enabled and the room re-checked: a
        // release either sees the count (and wakes us) or happened before
        // the re-check (which then finds its room)
        let _waiting = Waiting::new(self);
        loop {
            let stream_room = self.room.notified();
            let server_room = self.server.room.notified();
            tokio::pin!(stream_room, server_room);
            stream_room.as_mut().enable();
            let on_server = refused == Refused::Server;
            if on_server {
                server_room.as_mut().enable();
            }
            refused = match self.try_charge(bytes) {
                // a wakeup `server_room` got meanwhile is passed on as it drops
                Ok(charge) => return charge,
                Err(refused) => refused,
            };
            if refused == Refused::Stream {
                if on_server {
                    // its own stream is the limit now: drop the place among
                    // the server's waiters (passing on a wakeup it got), so
                    // a stream whose client does not read holds none
                    continue;
                }
                stream_room.await;
                continue;
            }
            if !on_server {
                // refused by the server this time: wait for its room too
                continue;
            }
            let by_server = tokio::select! {
                _ = stream_room => false,
                _ = server_room, if on_server => true,
            };
            match self.try_charge(bytes) {
                Ok(charge) => {
                    if by_server {
                        self.server.pass_room();
                    }
                    return charge;
                }
                Err(again) => {
                    if by_server && again == Refused::Stream {
                        // the server's room is for another stream
                        self.server.pass_room();
                    }
                    refused = again;
                }
            }
        }
    }

    fn try_charge(self: &Arc<Self>, bytes: usize) -> Result<Charge, Refused> {
        let limit = self.limit;
        let before = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used == 0 || used.saturating_add(bytes) <= limit).then(|| used + bytes)
            })
            .map_err(|_| Refused::Stream)?;
        let first = before == 0;
        let server_limit = self.server.limit;
        let server =
            self.server
                .counter()
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    (first || used.saturating_add(bytes) <= server_limit).then(|| used + bytes)
                });
        if server.is_err() {
            // no wakeup owed: the stream had bytes charged (else `first`
            // would have let this through), and their release wakes anyone
            // this brief charge turned away
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Refused::Server);
        }
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        self.server.counter().fetch_sub(bytes, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
        if self.server.waiting.load(Ordering::SeqCst) > 0 {
            // one waiter; it passes the wakeup on if room is left
            self.server.room.notify_one();
        }
    }
}

/// Which budget turned a charge away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Stream,
    Server,
}

impl ServerBudget {
    /// Wakes the next waiter for server room if there is room left.
    fn pass_room(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0
            && self.counter().load(Ordering::SeqCst) < self.limit
        {
            self.room.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stream_waits_at_its_limit_and_resumes_when_bytes_are_released() {
        let server = Arc::new(ServerBudget::new(1 << 20, Arc::default()));
        let stream = StreamBudget::new(server.clone(), 100);
        let first = stream.charge(60).await;
        let second = stream.charge(40).await;
        assert_eq!((stream.used(), server.used()), (100, 100));
        let waiting = tokio::spawn({
            let stream = stream.clone();
            async move { stream.charge(10).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room: it waits");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room made")
            .expect("task");
        assert_eq!((stream.used(), server.used()), (50, 50));
        drop((second, third));
        assert_eq!((stream.used(), server.used()), (0, 0));
    }

    #[tokio::test]
    async fn a_release_wakes_every_server_waiter_it_makes_room_for() {
        let server = Arc::new(ServerBudget::new(100, Arc::default()));
        let big = StreamBudget::new(server.clone(), 1000);
        let held = big.charge(80).await;
        let streams: Vec<_> = (0..2)
            .map(|_| StreamBudget::new(server.clone(), 1000))
            .collect();
        let mut firsts = Vec::new();
        for stream in &streams {
            // a stream's first message always goes
            firsts.push(stream.charge(10).await);
        }
        assert_eq!(server.used(), 100);
        let waiting: Vec<_> = streams
            .iter()
            .map(|stream| {
                let stream = stream.clone();
                tokio::spawn(async move { stream.charge(10).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(waiting.iter().all(|task| !task.is_finished()), "no room");
        // one release, room for both: one is woken and passes the wakeup on
        drop(held);
        for task in waiting {
            let charge = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("woken")
                .expect("task");
            firsts.push(charge);
        }
        assert_eq!(server.used(), 40);
        drop(firsts);
        assert_eq!(server.used(), 0);
    }

    #[tokio::test]
    async fn an_empty_stream_always_gets_one_message_even_past_the_server_budget() {
        let server = Arc::new(ServerBudget::new(100, Arc::default()));
        let slow = StreamBudget::new(server.clone(), 100);
        let _held = slow.charge(100).await;
        let reader = StreamBudget::new(server.clone(), 100);
        // one message, although the server's budget is used up
        let one = reader.charge(30).await;
        assert_eq!(server.used(), 130);
        // a second must wait for the first to be taken
        let second = tokio::time::timeout(Duration::from_millis(50), reader.charge(30)).await;
        assert!(second.is_err(), "the server budget is used up");
        drop(one);
        let _two = tokio::time::timeout(Duration::from_secs(5), reader.charge(30))
            .await
            .expect("alone again: room for one");
        // an oversized message goes alone on an empty stream
        let big = StreamBudget::new(server.clone(), 10);
        let _big = big.charge(1000).await;
        assert_eq!(big.used(), 1000);
    }
}
