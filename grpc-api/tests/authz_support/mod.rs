//! Shared helpers of the authorization tests: a policy file, a server over
//! a Unix socket (anyone may connect: the permission under test is the
//! policy's) and TCP on the same store and authorizer, with the fake kernel
//! of the write tests behind them, and clients sending a bearer token.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mapsync_core::{LogLimits, Store};
use mapsync_grpc::authz::Authorizer;
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::tls::ServerTls;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[path = "../write_support/mod.rs"]
pub mod write_support;

/// A client adding `authorization: Bearer TOKEN` to every call.
pub type TokenClient = MapSyncClient<
    InterceptedService<
        Channel,
        Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>,
    >,
>;

/// `client` over `channel`, with `token` if given.
pub fn with_token(channel: Channel, token: Option<&str>) -> TokenClient {
    let value: Option<tonic::metadata::AsciiMetadataValue> =
        token.map(|token| format!("Bearer {token}").parse().expect("ascii token"));
    MapSyncClient::with_interceptor(
        channel,
        Box::new(move |mut request: tonic::Request<()>| {
            if let Some(value) = &value {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        }),
    )
}

/// The sha256 hex of `token`, as the policy file stores it.
pub fn token_hash(token: &str) -> String {
    mapsync_grpc::authz::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The servers of one test: Unix socket and TCP over one store, one
/// authorizer (reloaded from `policy_file`).
pub struct AuthServer {
    pub store: Store,
    pub fake: write_support::Fake,
    pub socket: PathBuf,
    pub tcp: String,
    pub authz: Arc<Authorizer>,
    pub policy_file: PathBuf,
    pub dir: tempfile::TempDir,
    stops: Vec<oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>>,
}

impl AuthServer {
    /// Maps `flows`, `cfg` and `rules` (see `write_support::default_maps`)
    /// under the policy `policy`; the TCP side with `tls` if given.
    pub async fn start(policy: &str, tls: Option<Arc<ServerTls>>) -> AuthServer {
        let (store, mut publisher) = Store::new(LogLimits::default());
        for (info, entries) in write_support::default_maps() {
            publisher.add_map(info, entries, 0);
        }
        publisher.set_ready();
        let (commands, fake) = write_support::fake_kernel(publisher);
        let dir = tempfile::tempdir().expect("temp dir");
        set_mode(dir.path(), 0o755);
        let policy_file = dir.path().join("policy.toml");
        std::fs::write(&policy_file, policy).expect("write policy");
        let authz = Authorizer::from_file(&policy_file).expect("a valid policy");
        let socket = dir.path().join("mapsync.sock");
        let unix = Listener::bind(&format!("unix:{}", socket.display()))
            .await
            .expect("bind unix");
        set_mode(&socket, 0o666);
        let tcp = Listener::bind("127.0.0.1:0").await.expect("bind tcp");
        let endpoint = tcp.endpoint();
        let mut stops = Vec::new();
        let mut servers = Vec::new();
        for (listener, tls) in [(unix, None), (tcp, tls)] {
            let (stop, stopped) = oneshot::channel::<()>();
            let options = ServeOptions {
                writes: Some((commands.clone(), WritePolicy::default())),
                authz: authz.clone(),
                tls,
                ..ServeOptions::default()
            };
            servers.push(tokio::spawn(serve_with(
                listener,
                store.clone(),
                options,
                async {
                    let _ = stopped.await;
                },
            )));
            stops.push(stop);
        }
        AuthServer {
            store,
            fake,
            socket,
            tcp: endpoint,
            authz,
            policy_file,
            dir,
            stops,
            servers,
        }
    }

    /// A plain TCP client, with `token` if given.
    pub async fn tcp_client(&self, token: Option<&str>) -> TokenClient {
        let channel = Channel::from_shared(format!("http://{}", self.tcp))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        with_token(channel, token)
    }

    /// This process (root) over the Unix socket.
    pub async fn root_client(&self) -> TokenClient {
        with_token(write_support::unix_channel(&self.socket).await, None)
    }

    /// Rewrites the policy file and reloads it (what SIGHUP does in serve).
    pub fn reload(&self, policy: &str) -> Result<(), mapsync_grpc::authz::PolicyError> {
        std::fs::write(&self.policy_file, policy).expect("write policy");
        self.authz.reload()
    }

    pub async fn shutdown(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for server in self.servers {
            server.await.expect("server task").expect("clean shutdown");
        }
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
