//! Bearer tokens from the client: `ConnectOptions::token` against a real
//! server with a policy file whose user is known by the token's sha256.

use std::time::Duration;

use bytes::Bytes;
use mapsync_client::{Client, ClientError, ConnectOptions};
use mapsync_core::{LogLimits, MapInfo, MapKind, Store};
use mapsync_grpc::authz::{Authorizer, Policy};
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use tonic::Code;

/// Serves maps `flows` and `secret` on 127.0.0.1 under a policy where the
/// token `t0ken` reads `flows` only: the endpoint.
async fn serve() -> String {
    let (store, mut writer) = Store::new(LogLimits::default());
    for name in ["flows", "secret"] {
        let info = MapInfo::new(name, MapKind::Hash, 4, 2, 16).with_id(1);
        let entries = vec![(
            Bytes::from_static(b"\0\0\0\x01"),
            Bytes::from_static(b"v1"),
            1,
        )];
        writer.add_map(info, entries, 0);
    }
    writer.set_ready();
    let hash: String = mapsync_grpc::authz::sha256(b"t0ken")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        "[users.svc]\ntokens_sha256 = [\"{hash}\"]\nroles = [\"r\"]\n[roles.r]\nread = [\"flows\"]\n"
    );
    let policy = Policy::parse("policy.toml".as_ref(), &text).expect("policy");
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.endpoint();
    let options = ServeOptions {
        authz: Authorizer::with_policy(policy),
        ..ServeOptions::default()
    };
    tokio::spawn(async move {
        let _writer = writer;
        serve_with(listener, store, options, std::future::pending()).await
    });
    endpoint
}

async fn maps_with(endpoint: &str, token: Option<&str>) -> Result<Vec<String>, ClientError> {
    let options = ConnectOptions {
        token: token.map(str::to_owned),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect_with(endpoint, &options).await?;
    let maps = tokio::time::timeout(Duration::from_secs(10), client.list_maps())
        .await
        .expect("an answer in time")?;
    Ok(maps.maps.into_iter().map(|map| map.name).collect())
}

#[tokio::test]
async fn the_token_is_sent_with_every_call() {
    let endpoint = serve().await;
    assert_eq!(
        maps_with(&endpoint, Some("t0ken\n"))
            .await
            .expect("known token"),
        vec!["flows".to_owned()],
        "trimmed, and only the readable map"
    );
    let mut client = Client::connect_with(
        &endpoint,
        &ConnectOptions {
            token: Some("t0ken".into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("connect");
    let listing = client.list("flows").await.expect("flows is readable");
    assert_eq!(listing.entries.len(), 1);
    let error = client.list("secret").await.expect_err("secret is not");
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");

    for token in [Some("wrong"), None] {
        let error = maps_with(&endpoint, token).await.expect_err("refused");
        assert_eq!(
            error.code(),
            Some(Code::Unauthenticated),
            "{token:?}: {error}"
        );
    }
    let error = maps_with(&endpoint, Some("two words"))
        .await
        .expect_err("bad");
    assert!(matches!(error, ClientError::InvalidToken), "{error}");
    assert!(!error.to_string().contains("two words"));
}
