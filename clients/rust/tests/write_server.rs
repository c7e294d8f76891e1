//! The write calls against the real gRPC server (mapsync-grpc over a Unix
//! socket) with the server tests' fake kernel task behind it (no BPF): the
//! statuses and metadata the server really sends become the typed errors,
//! and a write is read back at its revision.

#[path = "../../../grpc-api/tests/write_support/mod.rs"]
mod write_support;

use std::time::Duration;

use futures::StreamExt;
use mapsync_client::{
    ApplyEntry, ApplyMode, ApplyOptions, Client, ClientError, Compare, CompareResult,
    DeleteOptions, PutMode, PutOptions, ReadOptions, Txn, TxnOp, WatchItem, WatchOptions,
};
use mapsync_core::control::{CommandError, Refusal};
use mapsync_grpc::peer::WritePolicy;
use write_support::{WriteServer, key};

async fn client(server: &WriteServer) -> Client {
    Client::connect(&format!("unix:{}", server.socket.display()))
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_put_is_read_back_at_its_revision_and_watched_as_api() {
    let server = WriteServer::start(Some(WritePolicy::default())).await;
    let mut client = client(&server).await;
    let mut watch = client
        .watch(WatchOptions::maps(["cfg"]))
        .await
        .expect("watch");
    let written = client.put("cfg", &key(3), b"ab").await.expect("put");
    let read = ReadOptions {
        min_revision: written.revision,
        epoch: written.epoch,
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let value = client.get_with("cfg", &key(3), &read).await.expect("get");
    assert_eq!(value.value.as_deref(), Some(&b"ab"[..]));
    assert_eq!(value.mod_revision, written.revision);
    let event = loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("an item in time")
            .expect("open")
            .expect("item")
        {
            WatchItem::Events(events) if !events.is_empty() => break events[0].clone(),
            _ => {}
        }
    };
    assert_eq!((event.revision, event.source), (written.revision, "api"));

    // compare-and-swap on that mod revision, then with a stale one
    let cas = PutOptions::new()
        .expect_mod_revision(written.revision, written.epoch)
        .prev_value(true);
    let second = client
        .put_with("cfg", &key(3), b"cd", &cas)
        .await
        .expect("CAS put");
    assert_eq!(
        second.prev.expect("asked").value.as_deref(),
        Some(&b"ab"[..])
    );
    let error = client
        .put_with("cfg", &key(3), b"ef", &cas)
        .await
        .expect_err("stale");
    match error {
        ClientError::ModRevisionMismatch { current, .. } => assert_eq!(current, second.revision),
        other => panic!("{other:?}"),
    }
    let error = client
        .delete_with(
            "cfg",
            &key(3),
            &DeleteOptions::new().expect_mod_revision(written.revision, 0),
        )
        .await
        .expect_err("stale");
    assert!(
        matches!(error, ClientError::ModRevisionMismatch { .. }),
        "{error:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_s_refusals_are_typed() {
    let server = WriteServer::start(Some(WritePolicy::default())).await;
    let mut client = client(&server).await;
    let no_exist = PutOptions::new().mode(PutMode::NoExist);
    let error = client
        .put_with("flows", &key(0), b"xx", &no_exist)
        .await
        .expect_err("present");
    assert!(
        matches!(error, ClientError::AlreadyExists { .. }),
        "{error:?}"
    );
    let exist = PutOptions::new().mode(PutMode::Exist);
    let error = client
        .put_with("flows", &key(5), b"xx", &exist)
        .await
        .expect_err("absent");
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");
    let error = client.delete("flows", &key(5)).await.expect_err("absent");
    assert!(matches!(error, ClientError::NotFound { .. }), "{error:?}");
    let error = client
        .put("nope", &key(0), b"xx")
        .await
        .expect_err("unknown");
    assert!(matches!(error, ClientError::UnknownMap { .. }), "{error:?}");
    let error = client
        .put("flows", &[1, 2, 3], b"xx")
        .await
        .expect_err("short key");
    assert!(
        matches!(error, ClientError::InvalidArgument { .. }),
        "{error:?}"
    );
    let error = client
        .apply("flows", [], &ApplyOptions::new())
        .await
        .expect_err("plain map");
    assert!(
        matches!(error, ClientError::NotSwitchable { .. }),
        "{error:?}"
    );

    // a kernel refusal inside a Txn names the op
    server.fake.fail_next(CommandError::Refused {
        map: "cfg".into(),
        op: Some(1),
        what: "put".into(),
        refusal: Refusal::MapFull,
        errno: libc::E2BIG,
    });
    let txn = Txn::new()
        .then(TxnOp::put("cfg", key(1), b"aa".to_vec()))
        .then(TxnOp::put("cfg", key(2), b"bb".to_vec()));
    let error = client.txn(txn).await.expect_err("refused");
    assert!(
        matches!(
            error,
            ClientError::MapFull {
                failed_op: Some(1),
                ..
            }
        ),
        "{error:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn txn_compares_and_apply_versions() {
    let server = WriteServer::start(Some(WritePolicy::default())).await;
    let mut client = client(&server).await;
    let failed = client
        .txn(
            Txn::new()
                .when(Compare::exists("flows", key(7), true))
                .then(TxnOp::put("flows", key(7), b"no".to_vec()))
                .otherwise(TxnOp::put("flows", key(8), b"ok".to_vec())),
        )
        .await
        .expect("txn");
    assert!(!failed.succeeded);
    let read = ReadOptions {
        min_revision: failed.revision,
        ..Default::default()
    };
    let value = client.get_with("flows", &key(8), &read).await.expect("get");
    assert_eq!(value.value.as_deref(), Some(&b"ok"[..]));
    let held = client
        .txn(
            Txn::new()
                .when(Compare::value(
                    "flows",
                    key(8),
                    CompareResult::Equal,
                    b"ok".to_vec(),
                ))
                .then(TxnOp::delete("flows", key(8))),
        )
        .await
        .expect("txn");
    assert!(held.succeeded);

    let maps = client.list_maps().await.expect("maps");
    let rules = maps.get("rules").expect("rules");
    assert!(rules.switchable);
    let set: Vec<ApplyEntry> = (0..5u32)
        .map(|i| ApplyEntry::put(key(i), b"s1".to_vec()))
        .collect();
    // (the fake kernel numbers versions itself: take the one it answers)
    let applied = client
        .apply("rules", set.clone(), &ApplyOptions::new())
        .await
        .expect("apply");
    assert_eq!(applied.entries, 5);
    let again = client
        .apply(
            "rules",
            set,
            &ApplyOptions::new().expect_version(applied.version),
        )
        .await
        .expect("apply at the live version");
    assert_eq!(again.version, applied.version + 1);
    let applied = again;
    let listing = client
        .list_with(
            "rules",
            &ReadOptions {
                min_revision: applied.revision,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(listing.entries.len(), 5, "the replace removed key 9");
    let error = client
        .apply(
            "rules",
            [ApplyEntry::delete(key(0))],
            &ApplyOptions::new()
                .mode(ApplyMode::Merge)
                .expect_version(applied.version - 1),
        )
        .await
        .expect_err("stale version");
    match error {
        ClientError::VersionMismatch { live, .. } => assert_eq!(live, applied.version),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}
