//! Report back: what each node has applied, as etcd keys, and the fleet's
//! view of them.
//!
//! Under a status prefix `S` (default [`DEFAULT_STATUS_PREFIX`]) a node `N`
//! keeps two keys:
//! - `S/live/N`: its [`NodeStatus`] as JSON, attached to a lease the node
//!   keeps alive, so the key is gone within the lease's TTL when the node
//!   dies;
//! - `S/seen/N`: the same JSON as first written by the node's current
//!   process, without a lease, so a node whose live key is gone is still
//!   known and shown as *gone* (delete it to forget the node).
//!
//! How far behind a node is: against the revision of the last change under
//! the followed prefix (see [`prefix_revision`]), not etcd's global
//! revision, which every write anywhere (status keys included) moves.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions, SortOrder, SortTarget, WatchFilterType, WatchOptions};
use serde::{Deserialize, Serialize};

/// The status prefix `serve` reports under unless told otherwise.
pub const DEFAULT_STATUS_PREFIX: &str = "mapsync/status";

/// One followed map of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStatus {
    /// The mirrored map.
    pub map: String,
    /// The etcd prefix it follows.
    pub prefix: String,
    /// The etcd revision the map reflects.
    pub applied_revision: i64,
    /// Distinct keys under the prefix that do not decode (skipped).
    pub bad_keys: u64,
    /// Local writes reverted to etcd's state.
    pub reverted: u64,
    /// Full lists of the prefix.
    pub relists: u64,
    /// Follower sessions ended by an error.
    pub errors: u64,
}

/// What a node reports, as the JSON value of its status keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name (`serve --fleet-node`).
    pub node: String,
    /// The node's mapsync revision (its mirror's).
    pub mapsync_revision: u64,
    /// The node's mapsync epoch (new on each start).
    pub epoch: u64,
    /// When this was written, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
    /// Each followed map.
    pub maps: Vec<MapStatus>,
}

/// The status keys under one status prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLayout {
    dir: String,
}

impl StatusLayout {
    /// The layout under `prefix` (a trailing `/` is optional).
    pub fn new(prefix: &str) -> Self {
        Self {
            dir: format!("{}/", prefix.trim_end_matches('/')),
        }
    }

    /// `S/live/`: the leased keys of running nodes.
    pub fn live_dir(&self) -> String {
        format!("{}live/", self.dir)
    }

    /// `S/seen/`: the lease-free keys of every node seen.
    pub fn seen_dir(&self) -> String {
        format!("{}seen/", self.dir)
    }

    /// A running node's key.
    pub fn live_key(&self, node: &str) -> String {
        format!("{}{node}", self.live_dir())
    }

    /// A seen node's key.
    pub fn seen_key(&self, node: &str) -> String {
        format!("{}{node}", self.seen_dir())
    }
}

/// Why the fleet's status could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// The revision of the last change under a followed prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PrefixRevision {
    /// The revision (0: the prefix never changed in etcd's history).
    pub revision: i64,
    /// Whether deletions after the last put could not all be seen (history
    /// compacted, or etcd did not confirm in time): `revision` is then a
    /// lower bound.
    pub lower_bound: bool,
}

/// How long [`prefix_revision`] waits for etcd to replay deletions.
const REPLAY_WAIT: Duration = Duration::from_secs(5);

/// The revision of the last change under `dir`: the highest mod revision
/// of its live keys, raised by any deletion after it (replayed from etcd's
/// history with a watch that filters out puts, until a progress response
/// at or past the revision read).
pub async fn prefix_revision(
    client: &mut Client,
    dir: &str,
) -> Result<PrefixRevision, StatusError> {
    let newest = client
        .get(
            dir,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(1)
                    .with_keys_only(),
            ),
        )
        .await?;
    let current = newest.header().map_or(0, |h| h.revision());
    let mut revision = newest.kvs().first().map_or(0, |kv| kv.mod_revision());
    if revision >= current {
        return Ok(PrefixRevision {
            revision,
            lower_bound: false,
        });
    }
    let mut stream = client
        .watch(
            dir,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1)
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await?;
    let replay = async {
        // etcd 3.4 answers a progress request at once, not after the watch's
        // catch-up: let the catch-up (every 100 ms) go first
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.request_progress().await?;
        while let Some(response) = stream.message().await? {
            if response.compact_revision() > 0 || response.canceled() {
                return Ok::<bool, etcd_client::Error>(false);
            }
            for event in response.events() {
                if let Some(kv) = event.kv() {
                    revision = revision.max(kv.mod_revision());
                }
            }
            let at = response.header().map_or(0, |h| h.revision());
            if response.events().is_empty() && !response.created() && at >= current {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let complete = matches!(
        tokio::time::timeout(REPLAY_WAIT, replay).await,
        Ok(Ok(true))
    );
    Ok(PrefixRevision {
        revision,
        lower_bound: !complete,
    })
}

/// One row of the fleet's status: one followed map of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The node.
    pub node: String,
    /// Whether its live key exists (its lease is kept alive).
    pub live: bool,
    /// What it last reported (for a gone node: what it wrote when it
    /// started).
    pub status: MapStatus,
    /// The node's mapsync revision and epoch.
    pub mapsync_revision: u64,
    /// The node's epoch.
    pub epoch: u64,
    /// When the node wrote its status, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Revisions between what it applied and the prefix's last change (0:
    /// in sync); `None` for a gone node.
    pub behind: Option<i64>,
}

/// The fleet as its status keys say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStatus {
    /// Each followed prefix's last change.
    pub prefixes: BTreeMap<String, PrefixRevision>,
    /// One row per node and followed map (of `prefix` only, if given),
    /// live nodes first, then by name.
    pub rows: Vec<NodeRow>,
    /// Status values that did not parse (keys named).
    pub unreadable: Vec<String>,
}

/// The statuses under `dir` by node; keys whose value does not parse go
/// into `unreadable`.
async fn read_nodes(
    client: &mut Client,
    dir: &str,
    unreadable: &mut Vec<String>,
) -> Result<BTreeMap<String, NodeStatus>, StatusError> {
    let got = client
        .get(dir, Some(GetOptions::new().with_prefix()))
        .await?;
    let mut nodes = BTreeMap::new();
    for kv in got.kvs() {
        match serde_json::from_slice::<NodeStatus>(kv.value()) {
            Ok(status) => {
                nodes.insert(status.node.clone(), status);
            }
            Err(_) => unreadable.push(String::from_utf8_lossy(kv.key()).into_owned()),
        }
    }
    Ok(nodes)
}

/// Reads every node's status under `status_prefix`, keeping the maps that
/// follow `prefix` (every map if `None`), and how far behind each is.
pub async fn fleet_status(
    client: &mut Client,
    status_prefix: &str,
    prefix: Option<&str>,
) -> Result<FleetStatus, StatusError> {
    let layout = StatusLayout::new(status_prefix);
    let mut unreadable = Vec::new();
    let live = read_nodes(client, &layout.live_dir(), &mut unreadable).await?;
    let seen = read_nodes(client, &layout.seen_dir(), &mut unreadable).await?;
    let trim = |p: &str| p.trim_end_matches('/').to_owned();
    let wanted = prefix.map(trim);
    let mut rows = Vec::new();
    let mut prefixes = BTreeMap::new();
    let all = live.values().map(|s| (true, s)).chain(
        seen.values()
            .filter(|s| !live.contains_key(&s.node))
            .map(|s| (false, s)),
    );
    for (is_live, node) in all {
        for map in &node.maps {
            let followed = trim(&map.prefix);
            if wanted.as_ref().is_some_and(|w| *w != followed) {
                continue;
            }
            if !prefixes.contains_key(&followed) {
                let last = prefix_revision(client, &format!("{followed}/")).await?;
                prefixes.insert(followed.clone(), last);
            }
            let last = prefixes[&followed].revision;
            rows.push(NodeRow {
                node: node.node.clone(),
                live: is_live,
                status: map.clone(),
                mapsync_revision: node.mapsync_revision,
                epoch: node.epoch,
                updated_at_ms: node.updated_at_ms,
                behind: is_live.then(|| (last - map.applied_revision).max(0)),
            });
        }
    }
    Ok(FleetStatus {
        prefixes,
        rows,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keys_and_json_round_trip() {
        let layout = StatusLayout::new("mapsync/status/");
        assert_eq!(layout.live_key("n1"), "mapsync/status/live/n1");
        assert_eq!(layout.seen_key("n1"), "mapsync/status/seen/n1");
        let status = NodeStatus {
            node: "n1".into(),
            mapsync_revision: 7,
            epoch: 9,
            updated_at_ms: 1,
            maps: vec![MapStatus {
                map: "flows".into(),
                prefix: "fleet/flows".into(),
                applied_revision: 42,
                bad_keys: 1,
                reverted: 0,
                relists: 1,
                errors: 0,
            }],
        };
        let json = serde_json::to_vec(&status).expect("json");
        assert_eq!(
            serde_json::from_slice::<NodeStatus>(&json).expect("parse"),
            status
        );
    }
}
