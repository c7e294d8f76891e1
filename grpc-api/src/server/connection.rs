//! One accepted connection: HTTP/2 through hyper, with the handshake
//! timeout, the idle timeout and the graceful close of [`ConnectionLimits`].
//!
//! The connection task owns the socket and the connection's [`Slot`] (its
//! place under `max_connections`): both go when the task ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tonic::codegen::http::{Request, Response};
use tonic::service::Routes;

use super::limits::{CLOSE_GRACE, ConnectionLimits};
use super::registry::Slot;
use crate::peer::Peer;

/// The HTTP/2 settings every connection is served with.
pub(crate) fn http2_builder(
    limits: &ConnectionLimits,
) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

/// Serves one connection until it closes, the peer fails the handshake or
/// stays without a stream for the idle timeout, or `shutdown` turns true
/// (then it is closed gracefully, within [`CLOSE_GRACE`]).
pub(crate) async fn serve_connection<IO>(
    io: IO,
    routes: Routes,
    builder: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    slot: Slot,
    peer: Peer,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = slot.state.clone();
    let handshake_done = state.handshake_done.clone();
    let io = HandshakeWatch::new(io, handshake_done.clone());
    let mut open_streams = state.streams.subscribe();
    let service = CountingRoutes {
        routes,
        streams: state.streams.clone(),
        peer: Arc::new(peer),
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let handshake_deadline = tokio::time::sleep(limits.handshake_timeout);
    tokio::pin!(handshake_deadline);
    let mut handshake_checked = false;
    // once closing: when the connection is dropped if it has not ended
    let mut closing: Option<tokio::time::Instant> = None;
    let close_deadline = || Some(tokio::time::Instant::now() + CLOSE_GRACE);
    if *shutdown.borrow() {
        connection.as_mut().graceful_shutdown();
        closing = close_deadline();
    }
    loop {
        // restarted whenever the number of open streams changes
        let idle_for = match limits.idle_timeout {
            Some(timeout) if closing.is_none() && *open_streams.borrow() == 0 => Some(timeout),
            _ => None,
        };
        let idle = sleep_for(idle_for);
        let grace = sleep_until(closing);
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = &mut handshake_deadline, if !handshake_checked => {
                handshake_checked = true;
                if !handshake_done.load(Ordering::Acquire) {
                    tracing::debug!(timeout = ?limits.handshake_timeout, "closing a connection that did not complete the HTTP/2 handshake in time");
                    return;
                }
            }
            changed = open_streams.changed() => {
                if changed.is_err() {
                    // the service is gone with the connection: it ends now
                    let _ = (&mut connection).await;
                    return;
                }
            }
            () = idle => {
                tracing::debug!(timeout = ?limits.idle_timeout, "closing a connection without streams");
                connection.as_mut().graceful_shutdown();
                // a peer that speaks HTTP/2 answers GOAWAY's ping as fast as a handshake
                closing = Some(tokio::time::Instant::now() + limits.handshake_timeout);
            }
            changed = shutdown.changed(), if closing.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    connection.as_mut().graceful_shutdown();
                    closing = close_deadline();
                }
            }
            () = state.evict.notified() => {
                tracing::debug!("closing a connection without streams to make room for a new one");
                return;
            }
            () = grace => {
                tracing::debug!(grace = ?CLOSE_GRACE, "dropping a connection that did not close after GOAWAY");
                return;
            }
        }
    }
}

/// Sleeps for `duration`, or forever.
async fn sleep_for(duration: Option<std::time::Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The first bytes of every HTTP/2 connection from a client.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;
/// The type of a SETTINGS frame.
const SETTINGS: u8 = 0x4;

/// The IO of a connection, watching the bytes it reads until the client's
/// handshake (the preface and a whole first SETTINGS frame) has arrived.
#[derive(Debug)]
struct HandshakeWatch<IO> {
    io: IO,
    /// Bytes read so far (counted until the handshake is complete).
    seen: usize,
    /// The first frame's header, as it arrives.
    header: [u8; FRAME_HEADER],
    /// Bytes that complete the handshake, once the frame header is known.
    needed: Option<usize>,
    done: Arc<AtomicBool>,
}

impl<IO> HandshakeWatch<IO> {
    fn new(io: IO, done: Arc<AtomicBool>) -> Self {
        Self {
            io,
            seen: 0,
            header: [0; FRAME_HEADER],
            needed: None,
            done,
        }
    }

    /// Takes note of `bytes`, the next ones read from the client.
    fn observe(&mut self, bytes: &[u8]) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        for &byte in bytes {
            let at = self.seen;
            self.seen += 1;
            if at >= PREFACE.len() && at < PREFACE.len() + FRAME_HEADER {
                self.header[at - PREFACE.len()] = byte;
            }
            if self.seen == PREFACE.len() + FRAME_HEADER {
                let length =
                    u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]);
                if self.header[3] != SETTINGS {
                    // not HTTP/2: hyper refuses it; the handshake never completes
                    self.needed = Some(usize::MAX);
                } else {
                    self.needed = Some(self.seen + length as usize);
                }
            }
            if self.needed.is_some_and(|needed| self.seen >= needed) {
                self.done.store(true, Ordering::Release);
                return;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HandshakeWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let this = &mut *self;
            this.observe(&buf.filled()[before..]);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HandshakeWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The gRPC routes, counting the connection's open streams (a stream is
/// open from its request until its response body is dropped) and attaching
/// the connection's [`Peer`] to every request.
#[derive(Clone)]
struct CountingRoutes {
    routes: Routes,
    streams: Arc<watch::Sender<usize>>,
    peer: Arc<Peer>,
}

impl hyper::service::Service<Request<Incoming>> for CountingRoutes {
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(Peer::clone(&self.peer));
        let guard = OpenStream::new(self.streams.clone());
        let mut routes = self.routes.clone();
        Box::pin(async move {
            use tonic::codegen::Service;
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut routes, cx))
                .await?;
            let response = routes.call(request).await?;
            Ok(response.map(|body| CountedBody { body, _open: guard }))
        })
    }
}

/// One open stream of a connection, counted while it lives.
struct OpenStream(Arc<watch::Sender<usize>>);

impl OpenStream {
    fn new(streams: Arc<watch::Sender<usize>>) -> Self {
        streams.send_modify(|open| *open += 1);
        Self(streams)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// A response body that keeps its stream counted until it is dropped.
struct CountedBody {
    body: tonic::body::Body,
    _open: OpenStream,
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_frame(length: usize) -> Vec<u8> {
        let mut frame = vec![
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
            SETTINGS,
            0,
            0,
            0,
            0,
            0,
        ];
        frame.extend(std::iter::repeat_n(0, length));
        frame
    }

    #[test]
    fn the_handshake_is_the_preface_and_a_whole_settings_frame_in_any_pieces() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings_frame(12));
        bytes.extend(b"more frames");
        for piece in [1, 5, 24, 33, bytes.len()] {
            let done = Arc::new(AtomicBool::new(false));
            let mut watch = HandshakeWatch::new((), done.clone());
            let handshake = PREFACE.len() + FRAME_HEADER + 12;
            let mut fed = 0;
            for chunk in bytes.chunks(piece) {
                assert_eq!(
                    done.load(Ordering::Relaxed),
                    fed >= handshake,
                    "after {fed} bytes in pieces of {piece}"
                );
                watch.observe(chunk);
                fed += chunk.len();
            }
            assert!(done.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn the_preface_alone_or_another_first_frame_is_no_handshake() {
        let done = Arc::new(AtomicBool::new(false));
        let mut watch = HandshakeWatch::new((), done.clone());
        watch.observe(PREFACE);
        assert!(!done.load(Ordering::Relaxed));
        let mut headers = settings_frame(0);
        headers[3] = 0x1;
        watch.observe(&headers);
        watch.observe(&[0; 100]);
        assert!(
            !done.load(Ordering::Relaxed),
            "a HEADERS frame first is no handshake"
        );
    }
}
