//! Typed JSON values in etcd: `serve --follow MAP=... --follow-format
//! MAP=json` encodes each etcd value through the map's BTF value type (the
//! typed test object's `typed_flows`), `mapsync fleet put|apply --format
//! json` writes such values, and a value that does not fit the type is a
//! bad key (counted, skipped, the map keeps the rest).

mod common;
#[path = "../sync-core/fleet/tests/etcd/mod.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fleet::{fleet_ok, wait_dump};
use common::{Server, map_arg, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};

/// `mapsync fleet --etcd E --prefix fleet/typed ARGS...`, which must succeed.
fn fleet(etcd: &etcd::Etcd, args: &[&str]) -> String {
    fleet_ok(&etcd.endpoint(), "fleet/typed", args)
}

fn wait_bad_keys(metrics_addr: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scraped = common::scrape_metrics(metrics_addr).unwrap_or_default();
        let got = scraped.get("mapsync_fleet_bad_keys_total{map=\"typed_flows\"}");
        if got == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bad keys {got:?}, want {want}: {scraped:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_json_values_in_etcd_are_encoded_through_the_maps_btf() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let etcd = etcd::Etcd::start().await;
    let web = support::typed_flow_key(0x0100_007f, 443, 6);
    let dns = support::typed_flow_key(0x0800_0808, 53, 17);
    let ssh = support::typed_flow_key(0x0100_007f, 22, 6);
    // before the node starts: listed, not watched
    fleet(
        &etcd,
        &[
            "put",
            "--format",
            "json",
            &support::hex(&web),
            r#"{"packets": 42, "name": "web", "verdict": "TYPED_DROP"}"#,
        ],
    );
    let pins = PinDir::new("fleet-typed");
    support::load_typed_maps(&pins);
    let flows = pin(&pins, "typed_flows");
    let follow = format!("typed_flows=etcd://{}/fleet/typed", etcd.endpoint());
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let _server = Server::start_with(
        &pins,
        &[map_arg("typed_flows", &flows)],
        &[
            "--follow",
            &follow,
            "--follow-format",
            "typed_flows=json",
            "--metrics-listen",
            &metrics_addr,
            "--fleet-node",
            "typed",
        ],
    );
    let mut want = BTreeMap::from([(web.clone(), support::typed_flow_value(42, "web", 1))]);
    wait_dump(&flows, &want);
    wait_bad_keys(&metrics_addr, 0.0);

    // a set as one transaction, values as JSON (members left out are zero)
    let files = tempfile::tempdir().expect("temp dir");
    let set = files.path().join("set.json");
    let text = serde_json::json!({
        support::hex(&web): {"packets": 43, "name": "web", "verdict": "TYPED_DROP"},
        support::hex(&dns): {"packets": 1, "name": "dns", "verdict": 2},
    });
    std::fs::write(&set, text.to_string()).expect("write set");
    let out = fleet(
        &etcd,
        &[
            "apply",
            "--format",
            "json",
            "--key-size",
            "8",
            &set.to_string_lossy(),
        ],
    );
    assert!(out.contains("2 ops written in one transaction"), "{out}");
    want.insert(web.clone(), support::typed_flow_value(43, "web", 1));
    want.insert(dns.clone(), support::typed_flow_value(1, "dns", 2));
    wait_dump(&flows, &want);

    // values that do not fit the type: an unknown enumerator, a name too
    // long for char[16], a member the struct lacks, no JSON at all; each is
    // a bad key and nothing of it lands (the dns entry keeps its value)
    let mut client = etcd.client().await;
    let etcd_key = |key: &[u8]| format!("fleet/typed/{}", support::hex(key));
    for (key, value) in [
        (&ssh, r#"{"verdict": "TYPED_MAYBE"}"#),
        (&ssh, r#"{"name": "a name far too long for it"}"#),
        (&dns, r#"{"packets": 2, "bytes": 9}"#),
    ] {
        client.put(etcd_key(key), value, None).await.expect("put");
    }
    // the same etcd key counts once; the raw bytes of the old layout are no JSON
    let raw = support::typed_flow_key(1, 1, 1);
    client
        .put(etcd_key(&raw), support::typed_flow_value(1, "raw", 0), None)
        .await
        .expect("put");
    wait_bad_keys(&metrics_addr, 3.0);
    // the bad dns value makes the key as if absent: deleted, as a bad key
    // under the raw layout is
    want.remove(&dns);
    wait_dump(&flows, &want);
    // and a good value after them still lands
    fleet(
        &etcd,
        &[
            "put",
            "--format",
            "json",
            &support::hex(&ssh),
            r#"{"packets": 7, "name": "ssh"}"#,
        ],
    );
    want.insert(ssh.clone(), support::typed_flow_value(7, "ssh", 0));
    wait_dump(&flows, &want);

    // the control side refuses text that is no JSON, naming it; nothing written
    let revision = client
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    let out = mapsync()
        .args([
            "fleet",
            "--etcd",
            &etcd.endpoint(),
            "--prefix",
            "fleet/typed",
        ])
        .args([
            "put",
            "--format",
            "json",
            &support::hex(&ssh),
            "{packets: 1",
        ])
        .output()
        .expect("run mapsync fleet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("value `{packets: 1` is not JSON"),
        "{stderr}"
    );
    let after = client
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    assert_eq!(after, revision, "nothing was written");
}

#[test]
fn json_format_on_a_map_without_btf_is_one_line_naming_it() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("fleet-typed-nobtf");
    let plain = pin(&pins, "plain");
    support::create_map(&plain, "hash", 4, 8, 16, "plain");
    let socket = tempfile::tempdir().expect("temp dir");
    let out = mapsync()
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", socket.path().join("s.sock").display()))
        .arg("--pin-dir")
        .arg(pins.join("capture"))
        .arg("--map")
        .arg(map_arg("plain", &plain))
        .args([
            "--follow",
            "plain=etcd://127.0.0.1:1/fleet/plain",
            "--follow-format",
            "plain=json",
        ])
        .output()
        .expect("run mapsync");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--follow-format plain=json: the map has no BTF key and value types"),
        "{stderr}"
    );
    let out = mapsync()
        .args(["serve", "--map", "/nonexistent", "--follow"])
        .args([
            "plain=etcd://127.0.0.1:1/p",
            "--follow-format",
            "other=json",
        ])
        .output()
        .expect("run mapsync");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--follow-format other=json: no --follow names map `other`"),
        "{stderr}"
    );
}
