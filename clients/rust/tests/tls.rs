//! The Rust client over TLS (certificates made by the test with rcgen): it
//! reads from a TLS server trusting the server's CA, fails without TLS or
//! with another CA, and with mTLS reads only when it presents a certificate
//! from the server's client CA; unusable TLS files are a clear error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use mapsync_client::{Client, ClientError, ConnectOptions, TlsOptions};
use mapsync_core::{LogLimits, MapInfo, MapKind, Store};
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::tls::{ServerTls, TlsFiles};
use mapsync_test_tls::TestCa;

/// A certificate for 127.0.0.1 and localhost with CN `cn` from `ca`, and
/// its key, written into `dir` as `NAME.pem` and `NAME.key`.
fn issue(ca: &TestCa, dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    ca.issue(&["127.0.0.1", "localhost"], Some(cn))
        .write_into(dir, name)
}

/// Serves one map `flows` over TLS on 127.0.0.1: its endpoint.
async fn serve(files: TlsFiles) -> String {
    let (store, mut writer) = Store::new(LogLimits::default());
    let info = MapInfo {
        name: "flows".into(),
        id: 1,
        kernel_name: "flows".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 2,
        max_entries: 16,
        value_bytes: 2,
        types: None,
        switchable: false,
    };
    writer.add_map(
        info,
        vec![(
            Bytes::from_static(b"\0\0\0\x01"),
            Bytes::from_static(b"v1"),
            1,
        )],
        0,
    );
    writer.set_ready();
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.endpoint();
    let options = ServeOptions {
        tls: Some(ServerTls::load(files).expect("server tls")),
        ..ServeOptions::default()
    };
    tokio::spawn(async move {
        let _writer = writer;
        serve_with(listener, store, options, std::future::pending()).await
    });
    endpoint
}

async fn maps_over(endpoint: &str, tls: Option<TlsOptions>) -> Result<usize, ClientError> {
    let options = ConnectOptions {
        connect_timeout: Some(Duration::from_secs(10)),
        tls,
        ..ConnectOptions::default()
    };
    let mut client = Client::connect_with(endpoint, &options).await?;
    tokio::time::timeout(Duration::from_secs(10), client.list_maps())
        .await
        .expect("an answer in time")
        .map(|maps| maps.maps.len())
}

#[tokio::test]
async fn the_client_reads_over_tls_only_trusting_the_server_s_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("server-ca");
    let (cert, key) = issue(&ca, dir.path(), "server", "server");
    let endpoint = serve(TlsFiles {
        cert,
        key,
        client_ca: None,
    })
    .await;
    let trusted = TlsOptions::from_files(&ca.write_into(dir.path(), "ca.pem"), None).expect("tls");
    assert_eq!(
        maps_over(&endpoint, Some(trusted.clone()))
            .await
            .expect("over TLS"),
        1
    );
    // by name too: the certificate names localhost
    let port = endpoint.rsplit_once(':').expect("port").1;
    assert_eq!(
        maps_over(&format!("localhost:{port}"), Some(trusted))
            .await
            .expect("by name"),
        1
    );
    assert!(
        maps_over(&endpoint, None).await.is_err(),
        "plain HTTP/2 read"
    );
    let other = TestCa::new("other-ca");
    let untrusting =
        TlsOptions::from_files(&other.write_into(dir.path(), "other.pem"), None).expect("tls");
    let error = maps_over(&endpoint, Some(untrusting)).await.unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
}

#[tokio::test]
async fn with_mtls_the_client_reads_only_with_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("server-ca");
    let clients = TestCa::new("client-ca");
    let (cert, key) = issue(&ca, dir.path(), "server", "server");
    let endpoint = serve(TlsFiles {
        cert,
        key,
        client_ca: Some(clients.write_into(dir.path(), "clients.pem")),
    })
    .await;
    let ca_file = ca.write_into(dir.path(), "ca.pem");
    let (client_cert, client_key) = issue(&clients, dir.path(), "reader", "reader");
    let known = TlsOptions::from_files(&ca_file, Some((&client_cert, &client_key))).expect("tls");
    assert_eq!(
        maps_over(&endpoint, Some(known))
            .await
            .expect("with a client cert"),
        1
    );
    let anonymous = TlsOptions::from_files(&ca_file, None).expect("tls");
    assert!(
        maps_over(&endpoint, Some(anonymous)).await.is_err(),
        "read without a client cert"
    );
    let (stranger_cert, stranger_key) =
        issue(&TestCa::new("stranger"), dir.path(), "stranger", "reader");
    let stranger =
        TlsOptions::from_files(&ca_file, Some((&stranger_cert, &stranger_key))).expect("tls");
    assert!(
        maps_over(&endpoint, Some(stranger)).await.is_err(),
        "read with an unknown CA's cert"
    );
}

#[test]
fn unusable_tls_files_are_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.pem");
    let error = TlsOptions::from_files(&missing, None).unwrap_err();
    assert!(matches!(error, ClientError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("nope.pem"), "{error}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").expect("write");
    let error = TlsOptions::from_files(&garbage, None).unwrap_err();
    assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
    let ca = TestCa::new("ca");
    let ca_file = ca.write_into(dir.path(), "ca.pem");
    let (cert, _) = issue(&ca, dir.path(), "a", "a");
    let (_, other_key) = issue(&ca, dir.path(), "b", "b");
    let error = TlsOptions::from_files(&ca_file, Some((&cert, &other_key))).unwrap_err();
    assert!(matches!(error, ClientError::Tls { .. }), "{error}");
}
