//! The policy file over TCP: bearer tokens right, wrong and missing; per-map
//! permissions on reads, watches and writes; a reload while a watch stays
//! open; mTLS client certificate subjects as users.

mod authz_support;

use std::sync::Arc;
use std::time::Duration;

use authz_support::write_support::{key, put};
use authz_support::{AuthServer, TokenClient, token_hash, with_token};
use bytes::Bytes;
use mapsync_grpc::pb::{self, watch_request::Request as Req, watch_response::Kind};
use tokio::sync::mpsc;
use tonic::Code;

const TOKEN: &str = "ci-token-4f1d2a";

fn policy(cfg_roles: &str) -> String {
    format!(
        r#"
[users.ci]
tokens_sha256 = ["{}"]
roles = [{cfg_roles}]

[users.other]
tokens_sha256 = ["{}"]

[roles.read-flows]
read = ["flows"]

[roles.cfg-admin]
read = ["cf?"]
write = ["c*"]
"#,
        token_hash(TOKEN),
        token_hash("other-token")
    )
}

async fn list_maps(client: &mut TokenClient) -> Result<Vec<String>, Code> {
    let reply = client
        .list_maps(pb::ListMapsRequest::default())
        .await
        .map_err(|status| status.code())?;
    Ok(reply
        .into_inner()
        .maps
        .into_iter()
        .map(|m| m.name)
        .collect())
}

async fn get(client: &mut TokenClient, map: &str) -> Code {
    let request = pb::GetRequest {
        map: map.into(),
        key: key(0),
        ..Default::default()
    };
    client
        .get(request)
        .await
        .map_or_else(|status| status.code(), |_| Code::Ok)
}

/// An open Watch stream: its request sender and its responses.
struct Session {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl Session {
    async fn open(client: &mut TokenClient) -> Result<Session, tonic::Status> {
        let (requests, inbound) = mpsc::channel(8);
        let stream = tokio_stream::wrappers::ReceiverStream::new(inbound);
        let responses = client.watch(stream).await?.into_inner();
        Ok(Session {
            requests,
            responses,
        })
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(Duration::from_secs(20), self.responses.message())
            .await
            .expect("a response in time")
            .expect("stream open")
            .expect("not ended")
    }

    /// Creates watch `id` on `maps`: `Ok` once created, else the code it
    /// was canceled with.
    async fn create(&mut self, id: u64, maps: &[&str]) -> Result<(), Code> {
        let create = pb::WatchCreateRequest {
            watch_id: id,
            maps: maps.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        };
        self.requests
            .send(pb::WatchRequest {
                request: Some(Req::Create(create)),
            })
            .await
            .expect("send");
        loop {
            let response = self.next().await;
            if response.watch_id != id {
                continue;
            }
            match response.kind {
                Some(Kind::Created(_)) => return Ok(()),
                Some(Kind::Canceled(canceled)) => return Err(Code::from(canceled.code)),
                _ => {}
            }
        }
    }

    /// Waits for an event of watch `id` on `key` (after its initial state).
    async fn event_on(&mut self, id: u64, key: Bytes) {
        loop {
            let response = self.next().await;
            if let (true, Some(Kind::Events(batch))) = (response.watch_id == id, response.kind)
                && batch.events.iter().any(|event| event.key == key)
            {
                return;
            }
        }
    }
}

#[tokio::test]
async fn tokens_right_wrong_and_missing_and_roles_per_map() {
    let server = AuthServer::start(&policy(r#""read-flows", "cfg-admin""#), None).await;
    let mut missing = server.tcp_client(None).await;
    let mut wrong = server.tcp_client(Some("not-the-token")).await;
    let mut right = server.tcp_client(Some(TOKEN)).await;
    let mut other = server.tcp_client(Some("other-token")).await;

    assert_eq!(list_maps(&mut missing).await, Err(Code::Unauthenticated));
    assert_eq!(list_maps(&mut wrong).await, Err(Code::Unauthenticated));
    assert_eq!(get(&mut wrong, "flows").await, Code::Unauthenticated);
    let status = missing
        .put(put("cfg", 1, b"xx"))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("bearer token"), "{status:?}");
    assert!(Session::open(&mut wrong).await.is_err(), "watch refused");

    assert_eq!(
        list_maps(&mut right).await,
        Ok(vec!["cfg".to_owned(), "flows".to_owned()]),
        "only the readable maps"
    );
    assert_eq!(get(&mut right, "flows").await, Code::Ok);
    assert_eq!(get(&mut right, "rules").await, Code::PermissionDenied);
    right
        .put(put("cfg", 1, b"c1"))
        .await
        .expect("cfg is writable");
    let status = right
        .put(put("flows", 1, b"f1"))
        .await
        .expect_err("flows is read-only");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("may not write map `flows`"),
        "{status:?}"
    );
    let txn = pb::TxnRequest {
        success: vec![
            authz_support::write_support::txn_put("cfg", 2, b"c2"),
            authz_support::write_support::txn_put("flows", 2, b"f2"),
        ],
        ..Default::default()
    };
    let status = right.txn(txn).await.expect_err("one map is not writable");
    assert_eq!(status.code(), Code::PermissionDenied);
    let apply = pb::ApplyRequest {
        map: "rules".into(),
        ..Default::default()
    };
    let status = right
        .apply(tokio_stream::iter(vec![apply]))
        .await
        .expect_err("rules: no write");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = right
        .status(pb::StatusRequest::default())
        .await
        .expect("status");
    let shown: Vec<String> = status
        .into_inner()
        .maps
        .into_iter()
        .filter_map(|m| m.map.map(|m| m.name))
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(!shown.contains(&"rules".to_owned()), "{shown:?}");

    assert_eq!(
        list_maps(&mut other).await,
        Ok(vec![]),
        "a user without roles"
    );
    assert_eq!(get(&mut other, "flows").await, Code::PermissionDenied);

    let mut watch = Session::open(&mut right).await.expect("open");
    assert_eq!(watch.create(1, &["flows", "cfg"]).await, Ok(()));
    assert_eq!(
        watch.create(2, &["flows", "rules"]).await,
        Err(Code::PermissionDenied),
        "refused as a whole"
    );
    assert_eq!(
        watch.create(3, &[]).await,
        Err(Code::PermissionDenied),
        "every map"
    );

    assert_eq!(server.fake.received(), 1, "only the permitted put ran");
    let refusals = server.authz.refusals();
    assert_eq!(refusals.unauthenticated(), 5);
    assert_eq!(refusals.permission_denied(), 7);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reload_changes_what_new_requests_may_do_and_open_watches_stay() {
    let server = AuthServer::start(&policy(r#""read-flows""#), None).await;
    let mut ci = server.tcp_client(Some(TOKEN)).await;
    let mut watch = Session::open(&mut ci).await.expect("open");
    assert_eq!(watch.create(1, &["flows"]).await, Ok(()));
    assert_eq!(watch.create(2, &["cfg"]).await, Err(Code::PermissionDenied));

    let error = server
        .reload("[users.ci]\nroles = [\"nope\"]\n")
        .expect_err("a bad file");
    assert!(error.to_string().contains("policy.toml:"), "{error}");
    assert_eq!(get(&mut ci, "flows").await, Code::Ok, "old policy kept");

    server
        .reload(&policy(r#""read-flows", "cfg-admin""#))
        .expect("a good file");
    assert_eq!(
        watch.create(3, &["cfg"]).await,
        Ok(()),
        "same stream, new policy"
    );
    let mut root = server.root_client().await;
    root.put(put("flows", 4, b"f4")).await.expect("root writes");
    // the first watch kept going (20 s bound in `next`)
    watch.event_on(1, key(4)).await;
    ci.put(put("cfg", 2, b"c2")).await.expect("now writable");
    watch.event_on(3, key(2)).await;

    server.reload(&policy("")).expect("roles taken away again");
    assert_eq!(get(&mut ci, "flows").await, Code::PermissionDenied);
    server.shutdown().await;
}

mod mtls {
    use super::*;
    use mapsync_grpc::tls::{ServerTls, TlsFiles};
    use mapsync_test_tls::TestCa;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    async fn client(addr: &str, ca: &str, cert: &(String, String)) -> TokenClient {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(der.expect("ca")).expect("root");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.0.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert"),
            PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).expect("key"),
        )
        .expect("client auth");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
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
            .expect("connect");
        with_token(channel, None)
    }

    #[tokio::test]
    async fn a_client_certificate_s_subject_is_its_user() {
        let server_ca = TestCa::new("server-ca");
        let client_ca = TestCa::new("client-ca");
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let (cert, key) = server_ca.issue(&["localhost"], Some("server")).into_pems();
        let tls = ServerTls::load(TlsFiles {
            cert: write("s.pem", &cert),
            key: write("s.key", &key),
            client_ca: Some(write("ca.pem", client_ca.pem())),
        })
        .expect("tls");
        let policy = "[users.reader]\ncert_cns = [\"reader-svc\"]\nroles = [\"r\"]\n\
                      [roles.r]\nread = [\"flows\"]\n";
        let server = AuthServer::start(policy, Some(tls)).await;
        let issue = |cn| client_ca.issue(&["localhost"], Some(cn)).into_pems();
        let (reader, stranger) = (issue("reader-svc"), issue("stranger"));
        let mut reader = client(&server.tcp, server_ca.pem(), &reader).await;
        let mut stranger = client(&server.tcp, server_ca.pem(), &stranger).await;
        assert_eq!(list_maps(&mut reader).await, Ok(vec!["flows".to_owned()]));
        assert_eq!(get(&mut reader, "cfg").await, Code::PermissionDenied);
        let status = reader
            .put(put("flows", 3, b"f3"))
            .await
            .expect_err("read only");
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = stranger
            .list_maps(pb::ListMapsRequest::default())
            .await
            .expect_err("a verified certificate, but no user");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("`stranger`"), "{status:?}");
        server.shutdown().await;
    }
}
