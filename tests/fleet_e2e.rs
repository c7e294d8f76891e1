//! `mapsync serve --follow MAP=etcd://HOST:PORT/PREFIX` end to end: a real
//! etcd, a real kernel map, the real binary. The follower's convergence
//! cases (compaction, reconnects, bad keys, reverted local writes) are in
//! `sync-core/fleet/tests/follow.rs`.

mod common;
#[path = "../sync-core/fleet/tests/etcd/mod.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fleet::{fleet_cli, fleet_ok, wait_dump};
use common::{Server, map_arg, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};

fn key(n: u32) -> String {
    format!("fleet/flows/{}", support::hex(&n.to_le_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follow_applies_the_prefix_and_its_live_changes_to_the_kernel_map() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let etcd = etcd::Etcd::start().await;
    let mut client = etcd.client().await;
    client
        .put(key(1), 1u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    let pins = PinDir::new("fleet-serve");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 64, "flows");
    let follow = format!("flows=etcd://{}/fleet/flows", etcd.endpoint());
    let _server = Server::start_with(
        &pins,
        &[map_arg("flows", &flows)],
        &[
            "--follow",
            &follow,
            "--follow-reconcile",
            "1",
            "--fleet-node",
            "node-1",
        ],
    );
    let entry = |k: u32, v: u64| (k.to_le_bytes().to_vec(), v.to_le_bytes().to_vec());
    wait_dump(&flows, &BTreeMap::from([entry(1, 1)]));
    // the control side: `mapsync fleet put|delete` in the layout
    let fleet = |args: &[&str]| fleet_ok(&etcd.endpoint(), "fleet/flows", args);
    fleet(&["put", "02000000", "0200000000000000"]);
    fleet(&["delete", "01000000"]);
    wait_dump(&flows, &BTreeMap::from([entry(2, 2)]));
    // report back: the node is live and at the prefix's last change
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let json: serde_json::Value =
            serde_json::from_str(&fleet(&["status", "--json"])).expect("status JSON");
        let row = &json["rows"][0];
        if row["node"] == "node-1" && row["live"] == true && row["behind"] == 0 {
            assert_eq!(row["status"]["map"], "flows");
            break;
        }
        assert!(Instant::now() < deadline, "never in sync: {json}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = fleet(&["status"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-1") && l.contains(" live ")),
        "{table}"
    );
}

#[test]
fn a_bad_follow_spec_is_one_line_naming_it() {
    let out = mapsync()
        .args([
            "serve",
            "--map",
            "/nonexistent",
            "--follow",
            "flows=http://h:1/p",
        ])
        .output()
        .expect("run mapsync");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad follow spec `flows=http://h:1/p`: the URL must start with etcd://"),
        "{stderr}"
    );
}

/// `mapsync fleet` on the `fleet/flows` prefix of `etcd`.
fn flows_cli(etcd: &etcd::Etcd, args: &[&str]) -> (bool, String, String) {
    fleet_cli(&etcd.endpoint(), "fleet/flows", args)
}

fn set_file(dir: &std::path::Path, name: &str, keys: std::ops::Range<u32>, tag: u64) -> String {
    let set: serde_json::Map<String, serde_json::Value> = keys
        .map(|k| {
            (
                support::hex(&k.to_le_bytes()),
                support::hex(&tag.to_le_bytes()).into(),
            )
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&set).expect("json")).expect("write set file");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_apply_writes_a_set_as_one_txn_replacing_or_merging() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let etcd = etcd::Etcd::start_with(&["--max-txn-ops", "1000"]).await;
    let pins = PinDir::new("fleet-apply");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 256, "flows");
    let follow = format!("flows=etcd://{}/fleet/flows", etcd.endpoint());
    let _server = Server::start_with(&pins, &[map_arg("flows", &flows)], &["--follow", &follow]);
    let files = tempfile::tempdir().expect("tempdir");
    let big = set_file(files.path(), "big.json", 0..200, 1);
    let want = |keys: &[(u32, u64)]| -> BTreeMap<Vec<u8>, Vec<u8>> {
        keys.iter()
            .map(|(k, v)| (k.to_le_bytes().to_vec(), v.to_le_bytes().to_vec()))
            .collect()
    };

    // 200 ops: over etcd's default 128, refused before anything is written
    let (ok, _, stderr) = flows_cli(&etcd, &["apply", &big]);
    assert!(!ok);
    assert!(
        stderr.contains("200 ops exceed --max-txn-ops 128") && stderr.contains("nothing written"),
        "{stderr}"
    );
    let mut client = etcd.client().await;
    let listed = client
        .get(
            "fleet/flows/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("get");
    assert_eq!(listed.count(), 0, "nothing was written");

    // allowed: one txn, every node's map gets all 200
    let (ok, stdout, stderr) = flows_cli(
        &etcd,
        &[
            "apply",
            &big,
            "--max-txn-ops",
            "1000",
            "--key-size",
            "4",
            "--value-size",
            "8",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("200 ops written in one transaction"),
        "{stdout}"
    );
    let all: Vec<(u32, u64)> = (0..200).map(|k| (k, 1)).collect();
    wait_dump(&flows, &want(&all));

    // replace: keys not in the file are deleted; merge: only puts
    let small = set_file(files.path(), "small.json", 0..2, 2);
    let (ok, stdout, stderr) = flows_cli(&etcd, &["apply", &small, "--max-txn-ops", "1000"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("200 ops written"),
        "2 puts + 198 deletes: {stdout}"
    );
    wait_dump(&flows, &want(&[(0, 2), (1, 2)]));
    let extra = set_file(files.path(), "extra.json", 5..6, 3);
    let (ok, _, stderr) = flows_cli(&etcd, &["apply", &extra, "--merge"]);
    assert!(ok, "{stderr}");
    wait_dump(&flows, &want(&[(0, 2), (1, 2), (5, 3)]));
    // the same set again: nothing to write
    let (ok, stdout, _) = flows_cli(&etcd, &["apply", &extra, "--merge"]);
    assert!(ok && stdout.contains("nothing to write"), "{stdout}");
    // a bad file: one line naming the cause
    let bad = files.path().join("bad.json");
    std::fs::write(&bad, r#"{"0100": "zz"}"#).expect("write");
    let (ok, _, stderr) = flows_cli(&etcd, &["apply", &bad.to_string_lossy()]);
    assert!(!ok);
    assert!(stderr.contains("value `zz` is not hex"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_and_fleet_writes_over_tls_with_client_certificates() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let etcd = etcd::Etcd::start_tls().await;
    let certs = etcd.certs();
    let pem = |name: &str| certs.path(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client-key.pem"));
    let tls: [&str; 6] = ["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key];
    let pins = PinDir::new("fleet-serve-tls");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 64, "flows");
    let follow = format!("flows=etcds://{}/fleet/flows", etcd.endpoint());
    let mut extra = vec!["--follow", &follow];
    extra.extend(tls);
    let _server = Server::start_with(&pins, &[map_arg("flows", &flows)], &extra);
    let mut put = tls.to_vec();
    put.extend(["put", "03000000", "0300000000000000"]);
    let (ok, _, stderr) = flows_cli(&etcd, &put);
    assert!(ok, "{stderr}");
    wait_dump(
        &flows,
        &BTreeMap::from([(3u32.to_le_bytes().to_vec(), 3u64.to_le_bytes().to_vec())]),
    );
    // an etcds:// follow without a CA: refused before any map is opened
    let out = mapsync()
        .args(["serve", "--map", "/nonexistent", "--follow", &follow])
        .output()
        .expect("run mapsync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--follow with etcds:// needs --etcd-ca"),
        "{stderr}"
    );
}

/// `serve --follow` of `fleet/flows` into a fresh `flows` (4-byte keys,
/// 8-byte values) with its metrics on; (server, pins, metrics address).
fn serve_following(etcd: &etcd::Etcd, name: &str, extra: &[&str]) -> (Server, PinDir, String) {
    let pins = PinDir::new(name);
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 64, "flows");
    let follow = format!("flows=etcd://{}/fleet/flows", etcd.endpoint());
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let mut args = vec!["--follow", &follow, "--metrics-listen", &metrics_addr];
    args.extend_from_slice(extra);
    let server = Server::start_with(&pins, &[map_arg("flows", &flows)], &args);
    (server, pins, metrics_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_under_the_prefix_are_counted_in_the_metrics_per_map() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let etcd = etcd::Etcd::start().await;
    let mut client = etcd.client().await;
    client
        .put(key(1), 1u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    // two bad keys: a value of the wrong size, a key that is not hex
    client.put(key(2), vec![1, 2, 3], None).await.expect("put");
    client
        .put("fleet/flows/zz", 1u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    let (_server, pins, metrics_addr) =
        serve_following(&etcd, "fleet-bad-keys", &["--fleet-node", "bad-keys"]);
    let flows = pin(&pins, "flows");
    let entry = |k: u32, v: u64| (k.to_le_bytes().to_vec(), v.to_le_bytes().to_vec());
    wait_dump(&flows, &BTreeMap::from([entry(1, 1)]));
    let bad = |want: f64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let scraped = common::scrape_metrics(&metrics_addr).unwrap_or_default();
            let got = scraped.get("mapsync_fleet_bad_keys_total{map=\"flows\"}");
            if got == Some(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bad keys {got:?}, want {want}: {scraped:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    bad(2.0);
    // one more, live (a watched put), and a good write after it still lands
    client.put(key(3), vec![0; 9], None).await.expect("put");
    client
        .put(key(4), 4u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    wait_dump(&flows, &BTreeMap::from([entry(1, 1), entry(4, 4)]));
    bad(3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_node_revokes_its_lease_and_shows_gone_at_once() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let etcd = etcd::Etcd::start().await;
    let mut client = etcd.client().await;
    client
        .put(key(1), 1u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    // a TTL far above the test's bound: only the revoke makes it gone in time
    let (mut server, _pins, _metrics) = serve_following(
        &etcd,
        "fleet-revoke",
        &["--fleet-node", "leaving", "--fleet-status-ttl", "120"],
    );
    let row = || -> serde_json::Value {
        let (ok, out, err) = flows_cli(&etcd, &["status", "--json"]);
        assert!(ok, "{err}");
        let json: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
        json["rows"][0].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while row()["live"] != true {
        assert!(Instant::now() < deadline, "never live: {}", row());
        std::thread::sleep(Duration::from_millis(100));
    }
    server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.is_running() {
        assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // gone as soon as the process has exited, not after the 120 s TTL
    let gone = row();
    assert_eq!(gone["node"], "leaving", "{gone}");
    assert_eq!(gone["live"], false, "{gone}");
    assert!(
        server.log().iter().any(|l| l.contains("lease revoked")),
        "{:?}",
        server.log()
    );
}
