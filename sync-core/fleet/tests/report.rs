//! Report back against a real etcd: two nodes (each its own MapSync and
//! kernel map) follow one prefix and report; the fleet's status shows both
//! at the prefix's last change (a deletion included), a node whose follower
//! stopped as behind, and a node whose lease is gone as gone; a reporter
//! stopped gracefully revokes its lease, so its node is gone at once.

mod etcd;

use std::time::Duration;

use etcd::{Etcd, require_etcd};
use mapsync_fleet::{FollowConfig, Follower, ReportConfig, Reporter, fleet_status};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};

const WAIT: Duration = Duration::from_secs(30);
const STATUS: &str = "test/status";

fn key(n: u32) -> String {
    format!("fleet/flows/{}", support::hex(&n.to_le_bytes()))
}

struct Node {
    sync: MapSync,
    follower: tokio::task::JoinHandle<()>,
    reporter: tokio::task::JoinHandle<()>,
    _pins: PinDir,
}

async fn node(etcd: &Etcd, name: &str) -> Node {
    let pins = PinDir::new(&format!("fleet-report-{name}"));
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, 64, "flows");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start MapSync");
    let follower = Follower::new(
        FollowConfig::new("flows", vec![etcd.endpoint()], "fleet/flows"),
        sync.store().clone(),
        sync.commands(),
    );
    let mut config = ReportConfig::new(vec![etcd.endpoint()], STATUS, name);
    config.ttl = Duration::from_secs(2);
    config.every = Duration::from_millis(100);
    let mut reporter = Reporter::new(config, sync.store().clone());
    reporter.add("flows", "fleet/flows", follower.stats());
    Node {
        follower: tokio::spawn(follower.run()),
        reporter: tokio::spawn(reporter.run()),
        sync,
        _pins: pins,
    }
}

/// (node, live, behind) of every row.
async fn rows(client: &mut etcd_client::Client) -> Vec<(String, bool, Option<i64>)> {
    fleet_status(client, STATUS, Some("fleet/flows"))
        .await
        .expect("fleet status")
        .rows
        .into_iter()
        .map(|row| (row.node, row.live, row.behind))
        .collect()
}

async fn wait_rows(
    client: &mut etcd_client::Client,
    what: &str,
    want: &[(&str, bool, Option<i64>)],
) {
    let want: Vec<(String, bool, Option<i64>)> = want
        .iter()
        .map(|(n, l, b)| (n.to_string(), *l, *b))
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = rows(client).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: fleet status {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_what_they_applied_and_a_dead_one_shows_gone() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    for k in 1u32..=3 {
        client
            .put(key(k), u64::from(k).to_le_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    let a = node(&etcd, "a").await;
    let b = node(&etcd, "b").await;
    wait_rows(
        &mut client,
        "both in sync",
        &[("a", true, Some(0)), ("b", true, Some(0))],
    )
    .await;

    // the last change is a deletion: both apply it, neither is behind
    let deleted = client.delete(key(2), None).await.expect("delete");
    let last = deleted.header().expect("header").revision();
    wait_rows(
        &mut client,
        "the deletion applied",
        &[("a", true, Some(0)), ("b", true, Some(0))],
    )
    .await;
    let status = fleet_status(&mut client, STATUS, None)
        .await
        .expect("status");
    assert_eq!(status.prefixes["fleet/flows"].revision, last);
    assert!(!status.prefixes["fleet/flows"].lower_bound);
    for row in &status.rows {
        assert!(row.status.applied_revision >= last, "{row:?}");
        assert_eq!(row.status.map, "flows");
        assert_eq!(
            row.epoch,
            if row.node == "a" {
                a.sync.store().epoch().0
            } else {
                b.sync.store().epoch().0
            }
        );
    }

    // b's follower stops: b is behind by the two changes after it
    b.follower.abort();
    client
        .put(key(7), 7u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    let put = client.delete(key(1), None).await.expect("delete");
    let behind = put.header().expect("header").revision() - last;
    wait_rows(
        &mut client,
        "b stopped following",
        &[("a", true, Some(0)), ("b", true, Some(behind))],
    )
    .await;

    // b dies (its lease is no longer kept alive): gone once the TTL passed
    b.reporter.abort();
    wait_rows(
        &mut client,
        "b gone",
        &[("a", true, Some(0)), ("b", false, None)],
    )
    .await;
    a.follower.abort();
    a.reporter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_stopped_gracefully_revokes_its_lease_and_the_node_is_gone_at_once() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let pins = PinDir::new("fleet-report-revoke");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, 64, "flows");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start MapSync");
    // a TTL far beyond the test's waits: only the revoke makes it gone
    let mut config = ReportConfig::new(vec![etcd.endpoint()], STATUS, "leaving");
    config.ttl = Duration::from_secs(300);
    config.every = Duration::from_millis(100);
    let mut reporter = Reporter::new(config, sync.store().clone());
    // a status row per followed map: one, not followed here
    reporter.add("flows", "fleet/revoke", Default::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reporter.run_until(async move {
        let _ = stopped.await;
    }));
    // (node, live) of every row, whatever the node follows
    let live = async |client: &mut etcd_client::Client| -> Vec<(String, bool)> {
        fleet_status(client, STATUS, None)
            .await
            .expect("fleet status")
            .rows
            .into_iter()
            .map(|row| (row.node, row.live))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while live(&mut client).await != [("leaving".to_owned(), true)] {
        assert!(tokio::time::Instant::now() < deadline, "never live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).expect("the reporter runs");
    tokio::time::timeout(mapsync_fleet::REVOKE_TIMEOUT * 3, task)
        .await
        .expect("the reporter returns after its stop")
        .expect("the reporter task");
    // at once: no wait for the lease's 300 s
    assert_eq!(live(&mut client).await, [("leaving".to_owned(), false)]);
}
