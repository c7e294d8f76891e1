//! TLS on TCP with certificates made by the test (rcgen): a TLS client
//! reads, a plain one is refused; with mTLS a client without a certificate
//! is refused and one with a certificate from the client CA reads; a reload
//! serves the new certificate to new connections while an open watch
//! stream keeps receiving.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mapsync_core::{Change, EventSource};
use mapsync_grpc::pb::{self, map_sync_client::MapSyncClient, watch_response::Kind};
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::tls::{ServerTls, TlsFiles};
use mapsync_test_tls::TestCa;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

/// A certificate for `localhost` with the subject CN `cn`: its PEM and
/// its key's PEM.
fn issue(ca: &TestCa, cn: &str) -> (String, String) {
    ca.issue(&["localhost"], Some(cn)).into_pems()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pem");
    path
}

/// Serves a ready store on 127.0.0.1:0 with `tls`: its address, its
/// publisher, its stopper and task.
async fn serve_tls(
    tls: Arc<ServerTls>,
) -> (
    SocketAddr,
    mapsync_core::Publisher,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
) {
    let (store, writer) = common::ready_store();
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.endpoint().parse().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        tls: Some(tls),
        ..ServeOptions::default()
    };
    let server = tokio::spawn(serve_with(listener, store, options, async {
        let _ = stopped.await;
    }));
    (addr, writer, stop, server)
}

/// A channel to `addr` over TLS trusting only `ca_pem`, with the client
/// certificate `client` (PEM cert, PEM key) if given.
async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

/// How many maps ListMaps shows over `channel`, or why it failed.
async fn list_maps(channel: Result<Channel, tonic::transport::Error>) -> Result<usize, String> {
    let mut client = MapSyncClient::new(channel.map_err(|error| format!("connect: {error}"))?);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_maps(pb::ListMapsRequest::default()),
    )
    .await
    .map_err(|_| "no answer in time".to_owned())?
    .map_err(|status| format!("status: {status}"))?;
    Ok(reply.into_inner().maps.len())
}

#[tokio::test]
async fn tls_clients_read_and_plain_ones_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("mapsync-test-ca");
    let (cert, key) = issue(&ca, "server");
    let tls = ServerTls::load(TlsFiles {
        cert: write(dir.path(), "server.pem", &cert),
        key: write(dir.path(), "server.key", &key),
        client_ca: None,
    })
    .expect("load tls");
    assert!(!tls.mutual());
    let (addr, _writer, stop, server) = serve_tls(tls).await;

    assert_eq!(
        list_maps(tls_channel(addr, ca.pem(), None).await).await,
        Ok(1)
    );
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await;
    let refused = list_maps(plain).await;
    assert!(refused.is_err(), "a plain client read: {refused:?}");
    let other_ca = TestCa::new("another-ca");
    let untrusted = list_maps(tls_channel(addr, other_ca.pem(), None).await).await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the cert read"
    );

    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server_ca = TestCa::new("server-ca");
    let client_ca = TestCa::new("client-ca");
    let (cert, key) = issue(&server_ca, "server");
    let tls = ServerTls::load(TlsFiles {
        cert: write(dir.path(), "server.pem", &cert),
        key: write(dir.path(), "server.key", &key),
        client_ca: Some(write(dir.path(), "client-ca.pem", client_ca.pem())),
    })
    .expect("load mtls");
    assert!(tls.mutual());
    let (addr, _writer, stop, server) = serve_tls(tls).await;

    let known = issue(&client_ca, "reader");
    assert_eq!(
        list_maps(tls_channel(addr, server_ca.pem(), Some(&known)).await).await,
        Ok(1)
    );
    let without = list_maps(tls_channel(addr, server_ca.pem(), None).await).await;
    assert!(without.is_err(), "a client without a certificate read");
    let stranger = issue(&TestCa::new("stranger-ca"), "reader");
    let unknown = list_maps(tls_channel(addr, server_ca.pem(), Some(&stranger)).await).await;
    assert!(
        unknown.is_err(),
        "a certificate from another CA was accepted"
    );

    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_open_streams_keep_going() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old_ca = TestCa::new("old-ca");
    let (cert, key) = issue(&old_ca, "server");
    let files = TlsFiles {
        cert: write(dir.path(), "server.pem", &cert),
        key: write(dir.path(), "server.key", &key),
        client_ca: None,
    };
    let tls = ServerTls::load(files.clone()).expect("load tls");
    let (addr, mut writer, stop, server) = serve_tls(tls.clone()).await;

    let mut client = MapSyncClient::new(
        tls_channel(addr, old_ca.pem(), None)
            .await
            .expect("connect"),
    );
    let mut session = common::Session::open(&mut client).await;
    let id = session.created(common::watch_map(0)).await;

    // a broken file keeps the served certificate
    std::fs::write(&files.key, "not a key").expect("break the key");
    assert!(tls.reload().is_err());
    assert_eq!(
        list_maps(tls_channel(addr, old_ca.pem(), None).await).await,
        Ok(1)
    );

    let new_ca = TestCa::new("new-ca");
    let (cert, key) = issue(&new_ca, "server");
    write(dir.path(), "server.pem", &cert);
    write(dir.path(), "server.key", &key);
    tls.reload().expect("reload");
    assert_eq!(
        list_maps(tls_channel(addr, new_ca.pem(), None).await).await,
        Ok(1)
    );
    let old = list_maps(tls_channel(addr, old_ca.pem(), None).await).await;
    assert!(old.is_err(), "new handshakes still get the old certificate");

    // the stream opened before the reload still delivers
    let revision = writer.apply([Change::put(
        "flows",
        common::key(2),
        &b"v2"[..],
        EventSource::Trace,
        2,
    )]);
    // (what the watch replays from before comes first)
    let events = loop {
        match session.next_for(id).await {
            Kind::Events(batch) if batch.events.iter().any(|e| e.revision == revision) => {
                break batch.events;
            }
            Kind::Events(_) | Kind::Progress(_) | Kind::InitialStateDone(_) => continue,
            other => panic!("expected events, got {other:?}"),
        }
    };
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| e.revision == revision)
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, common::key(2));

    drop(session);
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
}
