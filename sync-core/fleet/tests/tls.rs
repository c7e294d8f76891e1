//! TLS to etcd: a follower connects to an etcd that serves clients over
//! TLS only and requires a client certificate (`--client-cert-auth`), with
//! rcgen certificates; without the client certificate it never applies.

mod etcd;

use std::time::Duration;

use etcd::{Etcd, require_etcd};
use mapsync_fleet::{EtcdTls, FollowConfig, Follower};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reaches_a_tls_etcd_with_its_client_certificate_only() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let etcd = Etcd::start_tls().await;
    let mut client = etcd.client().await;
    let key = format!("fleet/flows/{}", support::hex(&1u32.to_le_bytes()));
    client
        .put(key, 1u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put over TLS");
    let pins = PinDir::new("fleet-tls");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, 16, "flows");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start MapSync");
    let follower = |tls: EtcdTls| {
        let mut config = FollowConfig::new("flows", vec![etcd.endpoint()], "fleet/flows");
        config.tls = Some(tls);
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(200);
        Follower::new(config, sync.store().clone(), sync.commands())
    };

    // the CA but no client certificate: etcd refuses, nothing applied
    let without =
        follower(EtcdTls::from_files(Some(&etcd.certs().path("ca.pem")), None).expect("ca"));
    let stats = without.stats();
    let task = tokio::spawn(without.run());
    wait_until(
        "the refused follower retried",
        Duration::from_secs(20),
        || stats.errors() >= 2,
    )
    .await;
    assert_eq!(stats.applied_revision(), 0);
    assert!(mirror(sync.store(), "flows").is_empty());
    task.abort();

    let with = follower(etcd.certs().client_tls());
    let stats = with.stats();
    let task = tokio::spawn(with.run());
    wait_until(
        "the map follows etcd over TLS",
        Duration::from_secs(20),
        || mirror(sync.store(), "flows").len() == 1,
    )
    .await;
    assert_eq!(stats.relists(), 1);
    assert_eq!(
        support::dump(&pin)
            .get(&1u32.to_le_bytes()[..])
            .map(Vec::as_slice),
        Some(&1u64.to_le_bytes()[..])
    );
    task.abort();
}
