//! Bounds of the transport: how many connections the server holds, how long
//! a connection may take to start speaking HTTP/2 or stay without a stream,
//! how a dead peer is noticed, and how many streams one connection may open.

use std::time::Duration;

/// Limits of connections and HTTP/2. Every connection the server accepts
/// costs a file descriptor and some memory, so none of them is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once. At the limit, a new connection takes
    /// the place of the oldest one without a call or stream open (one that
    /// never completed its handshake first); if every connection carries a
    /// stream, the new one is closed at once. Both with a (rate-limited) WARN
    /// line. Default 1024.
    pub max_connections: usize,
    /// Time a new connection has to send the HTTP/2 preface and its first
    /// SETTINGS frame; a connection that has not is closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection with no stream open for this long is closed (GOAWAY,
    /// then dropped at the latest `handshake_timeout` later): clients
    /// reconnect when they need to. `None`: never. Default 120 s.
    pub idle_timeout: Option<Duration>,
    /// The server pings a connection that has been quiet this long, to notice
    /// a peer that is gone (watch streams are quiet when nothing changes).
    /// `None`: no pings. Default 30 s.
    pub keepalive_interval: Option<Duration>,
    /// A ping not answered within this closes the connection and ends its
    /// streams. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Most concurrent HTTP/2 streams (calls) per connection, announced in
    /// SETTINGS; the client waits (or is refused) beyond it. Default 128.
    pub max_concurrent_streams: u32,
}

/// How long a connection has to finish its streams after GOAWAY when the
/// server shuts down, before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Delay before accepting again after the process ran out of file
/// descriptors (`EMFILE` / `ENFILE`); doubles per failure up to
/// [`MAX_ACCEPT_BACKOFF`] and resets after an accept succeeds.
pub const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest delay between accepts while out of file descriptors.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(120)),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 128,
        }
    }
}
