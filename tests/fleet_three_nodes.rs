//! Issue 15's fleet test: three `mapsync serve` processes (each its own
//! kernel map and pin dir) follow one etcd prefix through 10,000 etcd
//! writes (puts and deletes) while one node is killed with kill -9 and
//! restarted, etcd is stopped for 10 s and restarted, and another node is
//! down across a compaction of etcd's history. Then every node's kernel map
//! equals etcd's prefix byte for byte (missed deletions counted: zero), and
//! `mapsync fleet status` shows all three live at the prefix's last change.

mod common;
#[path = "../sync-core/fleet/tests/etcd/mod.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, map_arg, mapsync, pin};
use etcd_client::{CompactionOptions, GetOptions};
use mapsync_test_support::{self as support, PinDir};

const PREFIX: &str = "fleet/flows";
/// Keys written (the maps hold 4,096).
const KEYS: u64 = 2_000;
const WRITES: usize = 10_000;
/// Writers at once.
const WRITERS: usize = 8;

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Write `n` of the run: a put of key `n*7919 % KEYS` (value `n`), or,
/// every fourth write, a delete of it.
fn write_op(n: usize) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = ((n as u64 * 7919) % KEYS) as u32;
    let value = (n % 4 != 3).then(|| (n as u64).to_le_bytes().to_vec());
    (key.to_le_bytes().to_vec(), value)
}

/// Writes `range` with [`WRITERS`] concurrent writers; `done` counts.
async fn write(endpoint: String, range: std::ops::Range<usize>, done: Arc<AtomicUsize>) {
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let (endpoint, range, done) = (endpoint.clone(), range.clone(), done.clone());
        writers.spawn(async move {
            let mut client = etcd_client::Client::connect([endpoint], None)
                .await
                .expect("connect");
            for n in range.filter(|n| n % WRITERS == writer) {
                let (key, value) = write_op(n);
                let key = format!("{PREFIX}/{}", support::hex(&key));
                match value {
                    Some(value) => drop(client.put(key, value, None).await.expect("put")),
                    None => drop(client.delete(key, None).await.expect("delete")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined.expect("writer");
    }
}

/// Writes `range` in the background; returns when `at` of them are done,
/// with the writers' task.
async fn write_until(
    endpoint: String,
    range: std::ops::Range<usize>,
    at: usize,
) -> tokio::task::JoinHandle<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(write(endpoint, range, done.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < at {
        assert!(Instant::now() < deadline, "the writers are stuck");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task
}

/// etcd's prefix as map entries, and its revision.
async fn etcd_state(client: &mut etcd_client::Client) -> (Entries, i64) {
    let got = client
        .get(format!("{PREFIX}/"), Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    let entries = got
        .kvs()
        .iter()
        .map(|kv| {
            let hex = &kv.key()[PREFIX.len() + 1..];
            (hex::decode(hex).expect("hex key"), kv.value().to_vec())
        })
        .collect();
    (entries, got.header().expect("header").revision())
}

struct Node {
    name: String,
    pins: PinDir,
    server: Server,
}

impl Node {
    fn start(etcd: &etcd::Etcd, name: &str) -> Node {
        let pins = PinDir::new(&format!("fleet3-{name}"));
        let flows = pin(&pins, "flows");
        support::create_map(&flows, "hash", 4, 8, 4096, "flows");
        let follow = format!("flows=etcd://{}/{PREFIX}", etcd.endpoint());
        let server = Server::start_with(
            &pins,
            &[map_arg("flows", &flows)],
            &[
                "--follow",
                &follow,
                "--fleet-node",
                name,
                "--fleet-status-ttl",
                "3",
            ],
        );
        Node {
            name: name.to_owned(),
            pins,
            server,
        }
    }

    fn dump(&self) -> Entries {
        support::dump(&pin(&self.pins, "flows"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_through_kills_an_etcd_outage_and_a_compaction() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let started = Instant::now();
    let mut etcd = etcd::Etcd::start().await;
    let endpoint = etcd.endpoint();
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| Node::start(&etcd, name))
        .collect();

    // n2 killed with kill -9 during the writes, restarted during the next
    let writers = write_until(endpoint.clone(), 0..2_500, 1_000).await;
    nodes[1].server.kill9();
    writers.await.expect("writers");
    let writers = write_until(endpoint.clone(), 2_500..5_000, 1_000).await;
    nodes[1].server.restart();
    writers.await.expect("writers");

    // etcd down for 10 s: the nodes retry (backoff), then resume
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    etcd.resume().await;
    write(endpoint.clone(), 5_000..7_500, Arc::default()).await;

    // n3 down while keys are deleted and etcd's history compacted
    nodes[2].server.kill9();
    write(endpoint.clone(), 7_500..WRITES, Arc::default()).await;
    let mut client = etcd.client().await;
    let (_, revision) = etcd_state(&mut client).await;
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    nodes[2].server.restart();
    let writes_took = started.elapsed();
    eprintln!("writes done after {writes_took:?}");

    let (want, last) = etcd_state(&mut client).await;
    assert!(
        want.len() > 1_000 && want.len() < KEYS as usize,
        "puts and deletes both: {} keys",
        want.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        loop {
            let have = node.dump();
            if have == want {
                break;
            }
            let missed_deletions = have.keys().filter(|k| !want.contains_key(*k)).count();
            assert!(
                Instant::now() < deadline,
                "{} never converged: {} entries, etcd {}; {missed_deletions} missed deletions",
                node.name,
                have.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let missed_deletions = node
            .dump()
            .keys()
            .filter(|k| !want.contains_key(*k))
            .count();
        assert_eq!(missed_deletions, 0, "{}", node.name);
    }
    let converged = started.elapsed();

    // report back: all three live, at the prefix's last change
    let status = || {
        let out = mapsync()
            .args([
                "fleet", "--etcd", &endpoint, "--prefix", PREFIX, "status", "--json",
            ])
            .output()
            .expect("run fleet status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status JSON")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = status();
        let live: Vec<&serde_json::Value> = json["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|row| row["live"] == true)
            .collect();
        // the prefix's last change, not etcd's revision (status writes move it)
        let changed = json["prefixes"][PREFIX]["revision"]
            .as_i64()
            .expect("revision");
        assert!(changed <= last && changed > 0, "{json}");
        let in_sync = live.len() == 3
            && live.iter().all(|row| {
                row["behind"] == 0 && row["status"]["applied_revision"].as_i64() >= Some(changed)
            });
        if in_sync {
            let mut names: Vec<&str> = live
                .iter()
                .map(|r| r["node"].as_str().expect("name"))
                .collect();
            names.sort_unstable();
            assert_eq!(names, ["n1", "n2", "n3"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fleet status never showed all three in sync: {json}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{WRITES} etcd writes (with a kill -9, a 10 s etcd outage and a compaction) in {writes_took:?}; \
         all three nodes equal etcd ({} keys) after {converged:?}",
        want.len()
    );
}
