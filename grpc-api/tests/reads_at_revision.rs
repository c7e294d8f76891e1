//! Get and List at a past revision (rewound through the change log) and
//! with min_revision (read-your-writes), with their precise statuses.

mod common;

use std::time::Duration;

use common::{key, short_log, start, start_with};
use mapsync_core::LogLimits;
use mapsync_grpc::pb;
use mapsync_grpc::service::Limits;
use tonic::Code;

fn get_at(i: u32, revision: u64) -> pb::GetRequest {
    pb::GetRequest {
        map: "flows".into(),
        key: key(i),
        revision,
        ..Default::default()
    }
}

async fn list_at(running: &mut common::Running, revision: u64) -> Vec<(u32, Vec<u8>, u64)> {
    let mut pages = running
        .client
        .list(pb::ListRequest {
            map: "flows".into(),
            page_size: 2,
            revision,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let mut entries = Vec::new();
    while let Some(page) = pages.message().await.expect("page") {
        assert_eq!(page.header.expect("header").revision, revision);
        entries.extend(page.entries.into_iter().map(|e| {
            let k = u32::from_be_bytes(e.key[..].try_into().expect("4 bytes"));
            (k, e.value.to_vec(), e.mod_revision)
        }));
        if page.last {
            break;
        }
    }
    entries
}

#[tokio::test]
async fn get_and_list_at_a_past_revision() {
    // revisions 1-2: initial keys 0 and 1 ("v0")
    let mut running = start(LogLimits::default(), 2, true).await;
    running.put(0, b"a1"); // 3
    running.put(5, b"n1"); // 4
    running.delete(1); // 5
    running.put(0, b"a2"); // 6

    let value_at = |reply: pb::GetResponse| (reply.found, reply.value.to_vec(), reply.mod_revision);
    for (revision, expected) in [
        (2, (true, b"v0".to_vec(), 1)),
        (3, (true, b"a1".to_vec(), 3)),
        (5, (true, b"a1".to_vec(), 3)),
        (6, (true, b"a2".to_vec(), 6)),
        (0, (true, b"a2".to_vec(), 6)),
    ] {
        let reply = running
            .client
            .get(get_at(0, revision))
            .await
            .expect("get")
            .into_inner();
        let header = reply.header.expect("header");
        assert_eq!(header.revision, if revision == 0 { 6 } else { revision });
        assert_eq!(value_at(reply), expected, "key 0 at {revision}");
    }
    let deleted = running
        .client
        .get(get_at(1, 5))
        .await
        .expect("get")
        .into_inner();
    assert!(!deleted.found);
    let before = running
        .client
        .get(get_at(1, 4))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(value_at(before), (true, b"v0".to_vec(), 2));
    let not_yet = running
        .client
        .get(get_at(5, 3))
        .await
        .expect("get")
        .into_inner();
    assert!(!not_yet.found);

    assert_eq!(
        list_at(&mut running, 2).await,
        vec![(0, b"v0".to_vec(), 1), (1, b"v0".to_vec(), 2)]
    );
    assert_eq!(
        list_at(&mut running, 4).await,
        vec![
            (0, b"a1".to_vec(), 3),
            (1, b"v0".to_vec(), 2),
            (5, b"n1".to_vec(), 4)
        ]
    );
    assert_eq!(
        list_at(&mut running, 6).await,
        vec![(0, b"a2".to_vec(), 6), (5, b"n1".to_vec(), 4)]
    );
    running.shutdown().await;
}

#[tokio::test]
async fn revisions_out_of_the_log_are_out_of_range_and_epochs_are_checked() {
    let mut running = start(short_log(2), 1, true).await;
    for i in 0..5 {
        running.put(i, b"x"); // 2..=6; the log keeps 5 and 6
    }
    let status = running.client.get(get_at(0, 3)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    // "oldest" is the oldest revision in the change log, as in a Watch's
    // COMPACTED: a read at it works, and so does a watch from it
    assert_eq!(
        status.message(),
        "revision 3 is compacted; the oldest available revision is 5"
    );
    assert!(
        running.client.get(get_at(0, 5)).await.is_ok(),
        "the named revision is readable"
    );
    assert!(
        running.client.get(get_at(0, 4)).await.is_ok(),
        "oldest - 1 is readable too (the state before the oldest change)"
    );
    let status = running.client.get(get_at(0, 7)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status.message(),
        "revision 7 is in the future; the current revision is 6"
    );
    let status = running
        .client
        .list(pb::ListRequest {
            map: "flows".into(),
            revision: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    let status = running
        .client
        .get(pb::GetRequest {
            epoch: running.store.epoch().0 ^ 0x10,
            ..get_at(0, 5)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    running.shutdown().await;
}

#[tokio::test]
async fn min_revision_waits_then_reads_or_fails_precisely() {
    let limits = Limits {
        max_min_revision_wait: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut running = start_with(LogLimits::default(), 1, true, limits).await;
    // reached later: the read waits for it
    let mut client = running.client.clone();
    let read = tokio::spawn(async move {
        let mut request = tonic::Request::new(pb::GetRequest {
            map: "flows".into(),
            key: key(7),
            min_revision: 2,
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(5));
        client.get(request).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!read.is_finished(), "waits for revision 2");
    running.put(7, b"w");
    let reply = read.await.expect("task").expect("get").into_inner();
    assert_eq!(reply.header.expect("header").revision, 2);
    assert_eq!(&reply.value[..], b"w");

    // never reached: the client's deadline first
    let mut request = tonic::Request::new(pb::GetRequest {
        map: "flows".into(),
        key: key(7),
        min_revision: 100,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(150));
    let status = running.client.get(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // never reached: the server's maximum wait first
    let status = running
        .client
        .list(pb::ListRequest {
            map: "flows".into(),
            min_revision: 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("maximum wait of 300 ms"),
        "{}",
        status.message()
    );
    running.shutdown().await;
}
