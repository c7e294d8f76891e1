//! The resuming watch against an in-process server on a Unix socket: resume
//! across a server restart and across a client restart with no loss and no
//! duplicate; an explicit StartOver when history is compacted or the epoch
//! changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use mapsync_client::{Client, ClientError, StartOverReason, WatchItem, WatchOptions};
use mapsync_core::{Change, EventSource, LogLimits, MapInfo, MapKind, Publisher, Store};
use mapsync_grpc::server::{Listener, serve};
use tokio::sync::oneshot;

fn info() -> MapInfo {
    MapInfo {
        name: "flows".into(),
        id: 7,
        kernel_name: "flows".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 4,
        max_entries: 10_000,
        value_bytes: 4,
        types: None,
        switchable: false,
    }
}

fn store(limits: LogLimits, entries: u32) -> (Store, Publisher) {
    let (store, mut writer) = Store::new(limits);
    let initial = (0..entries)
        .map(|i| {
            (
                Bytes::from(i.to_be_bytes().to_vec()),
                Bytes::from_static(b"init"),
                1,
            )
        })
        .collect();
    writer.add_map(info(), initial, 0);
    writer.set_ready();
    (store, writer)
}

fn put(writer: &mut Publisher, i: u32) -> u64 {
    writer.apply([Change::put(
        "flows",
        (i % 50).to_be_bytes().to_vec(),
        i.to_be_bytes().to_vec(),
        EventSource::Trace,
        2,
    )])
}

struct Server {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
}

async fn serve_on(path: &Path, store: Store) -> Server {
    let listener = Listener::bind(&format!("unix:{}", path.display()))
        .await
        .expect("bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, store, async {
        let _ = stopped.await;
    }));
    Server { stop, task }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("task").expect("clean shutdown");
    }
}

async fn next(
    watch: &mut (impl Stream<Item = Result<WatchItem, ClientError>> + Unpin),
) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an item in time")
        .expect("watch open")
        .expect("no error")
}

/// Reads live events until revision `until`, checking they are exactly
/// `from..=until` (Progress items are skipped).
async fn expect_contiguous(
    watch: &mut (impl Stream<Item = Result<WatchItem, ClientError>> + Unpin),
    from: u64,
    until: u64,
) {
    let mut next_revision = from;
    while next_revision <= until {
        match next(watch).await {
            WatchItem::Events(events) => {
                for event in events {
                    assert_eq!(event.revision, next_revision, "no loss, no duplicate");
                    next_revision += 1;
                }
            }
            WatchItem::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn socket(dir: &tempfile::TempDir) -> (PathBuf, String) {
    let path = dir.path().join("mapsync.sock");
    let endpoint = format!("unix:{}", path.display());
    (path, endpoint)
}

#[tokio::test]
async fn resumes_across_a_server_restart_without_loss_or_duplicate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, endpoint) = socket(&dir);
    let (store, mut writer) = store(LogLimits::default(), 3);
    let server = serve_on(&path, store.clone()).await;
    let mut client = Client::connect(&endpoint).await.expect("connect");
    let mut watch = Box::pin(
        client
            .watch(WatchOptions::maps(["flows"]))
            .await
            .expect("watch"),
    );
    match next(&mut watch).await {
        WatchItem::Events(initial) => assert_eq!(initial.len(), 3),
        other => panic!("expected the initial state, got {other:?}"),
    }
    assert_eq!(
        next(&mut watch).await,
        WatchItem::InitialStateDone {
            epoch: store.epoch().0,
            revision: 3
        }
    );
    for i in 0..10 {
        put(&mut writer, i);
    }
    expect_contiguous(&mut watch, 4, 13).await;

    // the server goes away (its watches end UNAVAILABLE); changes go on
    server.stop().await;
    for i in 10..30 {
        put(&mut writer, i);
    }
    let server = serve_on(&path, store.clone()).await;
    for i in 30..40 {
        put(&mut writer, i);
    }
    expect_contiguous(&mut watch, 14, 43).await;
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_client_resumes_from_the_last_revision_it_saw() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, endpoint) = socket(&dir);
    let (store, mut writer) = store(LogLimits::default(), 0);
    let server = serve_on(&path, store.clone()).await;
    let epoch;
    {
        let mut client = Client::connect(&endpoint).await.expect("connect");
        let mut watch = Box::pin(
            client
                .watch(WatchOptions::maps(["flows"]).from_revision(1, store.epoch().0))
                .await
                .expect("watch"),
        );
        for i in 0..10 {
            put(&mut writer, i);
        }
        expect_contiguous(&mut watch, 1, 10).await;
        epoch = store.epoch().0;
        // the client process ends here
    }
    // dropping the watch closes its stream: the server lets its subscription go
    for _ in 0..200 {
        if store.subscribers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.subscribers(), 0, "the server saw the watch go");
    for i in 10..25 {
        put(&mut writer, i);
    }
    let mut client = Client::connect(&endpoint).await.expect("connect again");
    let mut watch = Box::pin(
        client
            .watch(WatchOptions::maps(["flows"]).from_revision(11, epoch))
            .await
            .expect("resume"),
    );
    expect_contiguous(&mut watch, 11, 25).await;
    server.stop().await;
}

/// The state a StartOver carries, as key -> value.
fn state(entries: &[mapsync_client::Event]) -> BTreeMap<Bytes, Bytes> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone().expect("a put")))
        .collect()
}

fn store_state(store: &Store) -> BTreeMap<Bytes, Bytes> {
    let snapshot = store.snapshot();
    let view = snapshot.map("flows").expect("map");
    view.iter()
        .map(|(k, e)| (Bytes::copy_from_slice(k), e.value_bytes()))
        .collect()
}

#[tokio::test]
async fn compaction_during_a_disconnect_is_delivered_as_a_start_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, endpoint) = socket(&dir);
    let (store, mut writer) = store(
        LogLimits {
            max_events: 20,
            max_bytes: usize::MAX,
        },
        0,
    );
    let server = serve_on(&path, store.clone()).await;
    let mut client = Client::connect(&endpoint).await.expect("connect");
    let mut watch = Box::pin(
        client
            .watch(WatchOptions::maps(["flows"]).from_revision(1, store.epoch().0))
            .await
            .expect("watch"),
    );
    for i in 0..5 {
        put(&mut writer, i);
    }
    expect_contiguous(&mut watch, 1, 5).await;
    server.stop().await;
    // more changes than the log keeps while the client is away
    for i in 5..105 {
        put(&mut writer, i);
    }
    let server = serve_on(&path, store.clone()).await;
    match next(&mut watch).await {
        WatchItem::StartOver {
            reason,
            revision,
            entries,
            epoch,
        } => {
            assert_eq!(reason, StartOverReason::Compacted { oldest: 86 });
            assert_eq!(revision, 105);
            assert_eq!(epoch, store.epoch().0);
            assert_eq!(state(&entries), store_state(&store), "the complete state");
        }
        other => panic!("expected a StartOver, got {other:?}"),
    }
    put(&mut writer, 200);
    expect_contiguous(&mut watch, 106, 106).await;
    server.stop().await;

    // a start revision already compacted starts with a StartOver too
    let server = serve_on(&path, store.clone()).await;
    let mut client = Client::connect(&endpoint).await.expect("connect");
    let mut watch = Box::pin(
        client
            .watch(WatchOptions::maps(["flows"]).from_revision(2, store.epoch().0))
            .await
            .expect("watch"),
    );
    assert!(matches!(
        next(&mut watch).await,
        WatchItem::StartOver {
            reason: StartOverReason::Compacted { .. },
            revision: 106,
            ..
        }
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_new_epoch_is_delivered_as_a_start_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, endpoint) = socket(&dir);
    let (old, mut writer) = store(LogLimits::default(), 2);
    let server = serve_on(&path, old.clone()).await;
    let mut client = Client::connect(&endpoint).await.expect("connect");
    let mut watch = Box::pin(
        client
            .watch(WatchOptions::maps(["flows"]).from_revision(3, old.epoch().0))
            .await
            .expect("watch"),
    );
    put(&mut writer, 1);
    expect_contiguous(&mut watch, 3, 3).await;
    server.stop().await;
    // mapsync restarts: a new store, a new epoch
    let (new, _new_writer) = store(LogLimits::default(), 7);
    let server = serve_on(&path, new.clone()).await;
    match next(&mut watch).await {
        WatchItem::StartOver {
            reason,
            epoch,
            revision,
            entries,
        } => {
            assert_eq!(reason, StartOverReason::EpochChanged);
            assert_eq!(epoch, new.epoch().0);
            assert_eq!(revision, 7);
            assert_eq!(entries.len(), 7);
        }
        other => panic!("expected a StartOver, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refused_watch_is_an_error_with_its_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, endpoint) = socket(&dir);
    let (store, _writer) = store(LogLimits::default(), 0);
    let server = serve_on(&path, store).await;
    let mut client = Client::connect(&endpoint).await.expect("connect");
    let error = match client.watch(WatchOptions::maps(["nope"])).await {
        Err(error) => error,
        Ok(_) => panic!("an unknown map is refused"),
    };
    assert_eq!(error.code(), Some(tonic::Code::NotFound));
    assert_eq!(
        error.to_string(),
        "watch refused: unknown map `nope` (not found)"
    );
    server.stop().await;
}
