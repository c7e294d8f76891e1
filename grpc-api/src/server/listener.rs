//! Where the server listens: binding TCP and Unix sockets (never taking a
//! live server's socket over), and accepting without spinning when the
//! process is out of file descriptors.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::error::ServeError;
use crate::peer::Peer;

/// How long probing an existing Unix socket for a live server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the server accepts connections.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix domain socket; its file is removed when the listener is
    /// dropped, if it is still this listener's socket.
    Unix(UnixListener, SocketFile),
}

/// The file of a bound Unix socket, identified by device and inode so that
/// it is removed only while it is still ours (not after another server
/// replaced it).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.device && meta.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    /// Binds `HOST:PORT` or `unix:PATH`. For a Unix socket, the parent
    /// directory is created, and a socket file left by a server that is gone
    /// is replaced; if a server still answers on it, this is
    /// [`ServeError::SocketInUse`] and the file is left alone.
    pub async fn bind(addr: &str) -> Result<Self, ServeError> {
        let bind_error = |source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        };
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ServeError::InvalidAddress {
                    addr: addr.to_owned(),
                });
            }
            let path = PathBuf::from(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(bind_error)?;
            }
            remove_stale_socket(addr, &path).await?;
            let listener = UnixListener::bind(&path).map_err(bind_error)?;
            let meta = std::fs::symlink_metadata(&path).map_err(bind_error)?;
            let file = SocketFile {
                path,
                device: meta.dev(),
                inode: meta.ino(),
            };
            return Ok(Listener::Unix(listener, file));
        }
        if !addr.contains(':') {
            return Err(ServeError::InvalidAddress {
                addr: addr.to_owned(),
            });
        }
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        Ok(Listener::Tcp(listener))
    }

    /// The address clients connect to: `HOST:PORT` (with the port actually
    /// bound) or `unix:PATH`.
    pub fn endpoint(&self) -> String {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".into(), |addr| addr.to_string()),
            Listener::Unix(_, file) => format!("unix:{}", file.path.display()),
        }
    }

    /// Accepts one connection, with the identity of its peer (a Unix peer
    /// whose credentials cannot be read is an error: `Ok` only with an
    /// identity).
    pub(crate) async fn accept(&self) -> std::io::Result<(Accepted, Peer)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, addr) = listener.accept().await?;
                // Nagle off: small watch messages must not wait for delayed ACKs
                let _ = stream.set_nodelay(true);
                Ok((Accepted::Tcp(stream), Peer::Tcp { addr }))
            }
            Listener::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                let peer = Peer::of_unix(&stream)?;
                Ok((Accepted::Unix(stream), peer))
            }
        }
    }
}

/// Removes `path` if it is a socket no server answers on. Anything else
/// there is left alone: a live socket is [`ServeError::SocketInUse`], and
/// binding over another kind of file fails with its own error.
async fn remove_stale_socket(addr: &str, path: &Path) -> Result<(), ServeError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: path.to_owned(),
        });
    }
    let probe = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await;
    match probe {
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|source| ServeError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
            tracing::info!(path = %path.display(), "replaced the socket of a server that is gone");
            Ok(())
        }
        Ok(Err(source)) if source.kind() != std::io::ErrorKind::WouldBlock => {
            Err(ServeError::Bind {
                addr: addr.to_owned(),
                source,
            })
        }
        // connected, a full backlog, or no answer in time: someone is there
        _ => Err(ServeError::SocketInUse {
            path: path.to_owned(),
        }),
    }
}

/// An accepted connection.
pub(crate) enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Accepted::Tcp(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
            Accepted::Unix(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Accepted::Tcp(stream) => std::pin::Pin::new(stream).poll_write(cx, buf),
            Accepted::Unix(stream) => std::pin::Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Accepted::Tcp(stream) => std::pin::Pin::new(stream).poll_flush(cx),
            Accepted::Unix(stream) => std::pin::Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Accepted::Tcp(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
            Accepted::Unix(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Accepted::Tcp(stream) => std::pin::Pin::new(stream).poll_write_vectored(cx, bufs),
            Accepted::Unix(stream) => std::pin::Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Accepted::Tcp(stream) => stream.is_write_vectored(),
            Accepted::Unix(stream) => stream.is_write_vectored(),
        }
    }
}

/// Whether an accept failed because the process or the system is out of
/// file descriptors (or socket memory): retrying at once would fail again.
pub(crate) fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
