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

/// Who may connect to a Unix socket the server creates: the socket file's
/// mode and group, and the group of the directory if the server creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Permission bits of the socket file (connecting needs write
    /// permission). Set exactly, whatever the process umask.
    pub mode: u32,
    /// Group given to the socket file (and to the directory, when the
    /// server creates it); `None` keeps the process's group.
    pub group: Option<u32>,
}

/// Default mode of the socket file: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Mode of the socket's directory when the server creates it: others may
/// not even reach the socket.
pub const SOCKET_DIR_MODE: u32 = 0o750;

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }
    }
}

impl Listener {
    /// Binds `HOST:PORT` or `unix:PATH`, a Unix socket with the default
    /// [`SocketOptions`] (mode 0660). See [`Listener::bind_with`].
    pub async fn bind(addr: &str) -> Result<Self, ServeError> {
        Self::bind_with(addr, SocketOptions::default()).await
    }

    /// Binds `HOST:PORT` or `unix:PATH`. For a Unix socket, the parent
    /// directory is created (mode 0750, with the group of `socket`) if it is
    /// missing, and a socket file left by a server that is gone is replaced;
    /// if a server still answers on it, this is [`ServeError::SocketInUse`]
    /// and the file is left alone.
    ///
    /// The socket is bound in a fresh private (0700) directory beside
    /// `PATH`, given its mode and group there, then renamed into place: at
    /// no moment can anyone connect to it whom `socket` does not let, and
    /// the process umask plays no part.
    pub async fn bind_with(addr: &str, socket: SocketOptions) -> Result<Self, ServeError> {
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
            let parent = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => parent.to_owned(),
                None => PathBuf::from("."),
            };
            create_socket_dir(&parent, socket.group).map_err(bind_error)?;
            remove_stale_socket(addr, &path).await?;
            let listener = bind_private(&parent, &path, socket).map_err(bind_error)?;
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

/// Creates `dir` (and its missing parents) if it does not exist: the
/// directories created get mode 0750 exactly and, with `group`, that group.
/// An existing directory is left as it is.
fn create_socket_dir(dir: &Path, group: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(candidate) = at.filter(|p| !p.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(candidate).is_ok() {
            break;
        }
        missing.push(candidate.to_owned());
        at = candidate.parent();
    }
    for created in missing.iter().rev() {
        match std::fs::DirBuilder::new()
            .mode(SOCKET_DIR_MODE)
            .create(created)
        {
            Ok(()) => {}
            // created meanwhile by someone else: theirs, left alone
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
        // the umask may have taken bits off: set them exactly
        std::fs::set_permissions(created, std::fs::Permissions::from_mode(SOCKET_DIR_MODE))?;
        if group.is_some() {
            std::os::unix::fs::chown(created, None, group)?;
        }
    }
    Ok(())
}

/// Binds a Unix socket at `path` (in `parent`) without a moment where it is
/// more open than `socket` says: bound in a new 0700 directory in `parent`,
/// given its mode and group, then renamed to `path`.
fn bind_private(
    parent: &Path,
    path: &Path,
    socket: SocketOptions,
) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let private = private_dir(parent)?;
    let staged = private.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(socket.mode))?;
        if socket.group.is_some() {
            std::os::unix::fs::chown(&staged, None, socket.group)?;
        }
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result
}

/// Creates a fresh directory in `parent` that only this user can enter.
fn private_dir(parent: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut attempt = 0u32;
    loop {
        let candidate = parent.join(format!(".mapsync-bind-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => {
                std::fs::set_permissions(&candidate, std::fs::Permissions::from_mode(0o700))?;
                return Ok(candidate);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 64 => {
                attempt += 1;
            }
            Err(error) => return Err(error),
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
