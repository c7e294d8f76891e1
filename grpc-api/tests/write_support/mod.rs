//! Shared helpers of the write tests: a fake kernel task that carries out
//! the write commands on a `Store` (as the real one does: one revision per
//! request, `SOURCE_API`), and a real server over a Unix socket (and TCP)
//! that sends it commands. No BPF, no kernel.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mapsync_core::control::{
    self, Applied, ApplyMode, Command, CommandError, CommandHandle, CompareResult, CompareTarget,
    Outcome, Previous, PutMode, Refusal, WriteOp,
};
use mapsync_core::{Change, EventSource, LogLimits, MapInfo, MapKind, Publisher, Snapshot, Store};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::service::{Limits, WatchStats};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A map and its initial entries (key, value, observed time).
pub type MapSetup = (MapInfo, Vec<(Bytes, Bytes, u64)>);

/// The fake kernel task's controls.
#[derive(Debug, Clone, Default)]
pub struct Fake {
    /// Errors to answer the next commands with, in order (the store is
    /// left alone for those).
    pub fail_next: Arc<Mutex<VecDeque<CommandError>>>,
    /// Commands received.
    pub received: Arc<AtomicUsize>,
}

impl Fake {
    pub fn fail_next(&self, error: CommandError) {
        self.fail_next.lock().expect("lock").push_back(error);
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// Starts the fake kernel task over `publisher`.
pub fn fake_kernel(mut publisher: Publisher) -> (CommandHandle, Fake) {
    let (handle, mut rx) = control::channel(control::COMMAND_QUEUE);
    let fake = Fake::default();
    let controls = fake.clone();
    tokio::spawn(async move {
        let mut kernel = Kernel {
            observed: 1 << 40,
            versions: HashMap::new(),
        };
        while let Some(request) = rx.recv().await {
            controls.received.fetch_add(1, Ordering::SeqCst);
            let forced = controls.fail_next.lock().expect("lock").pop_front();
            let reply = match forced {
                Some(error) => Err(error),
                None => kernel.serve(&mut publisher, request.command),
            };
            let _ = request.reply.send(reply);
        }
    });
    (handle, fake)
}

struct Kernel {
    observed: u64,
    versions: HashMap<String, u64>,
}

impl Kernel {
    fn next_ns(&mut self) -> u64 {
        self.observed += 1;
        self.observed
    }

    fn serve(
        &mut self,
        publisher: &mut Publisher,
        command: Command,
    ) -> Result<Outcome, CommandError> {
        let snapshot = publisher.store().snapshot();
        match command {
            Command::Put(put) => {
                let previous = previous(&snapshot, &put.map, &put.key)?;
                cas(&put.map, put.expect_mod_revision, &previous)?;
                let change = self.put_change(&snapshot, &put, &previous, None)?;
                let revision = publisher.apply_as_one([change]);
                Ok(Outcome {
                    previous: vec![previous],
                    ..Outcome::at(revision)
                })
            }
            Command::Delete(delete) => {
                let previous = previous(&snapshot, &delete.map, &delete.key)?;
                cas(&delete.map, delete.expect_mod_revision, &previous)?;
                let change = self.delete_change(&delete, &previous, None)?;
                let revision = publisher.apply_as_one([change]);
                Ok(Outcome {
                    previous: vec![previous],
                    ..Outcome::at(revision)
                })
            }
            Command::Txn(txn) => {
                let mut holds = true;
                for compare in &txn.compares {
                    let previous = previous(&snapshot, &compare.map, &compare.key)?;
                    holds &= compare_holds(compare.result, &compare.target, &previous);
                }
                let ops = if holds { &txn.success } else { &txn.failure };
                let mut changes = Vec::new();
                let mut previous_all = Vec::new();
                for (index, op) in ops.iter().enumerate() {
                    let previous = previous(&snapshot, op.map(), op.key())?;
                    let change = match op {
                        WriteOp::Put(put) => {
                            self.put_change(&snapshot, put, &previous, Some(index))?
                        }
                        WriteOp::Delete(delete) => {
                            self.delete_change(delete, &previous, Some(index))?
                        }
                    };
                    changes.push(change);
                    previous_all.push(previous);
                }
                let revision = publisher.apply_as_one(changes);
                Ok(Outcome {
                    revision,
                    succeeded: holds,
                    previous: previous_all,
                    applied: None,
                })
            }
            Command::Apply(apply) => {
                let view = snapshot
                    .map(&apply.map)
                    .ok_or_else(|| CommandError::UnknownMap {
                        name: apply.map.clone(),
                    })?;
                if !view.info().switchable {
                    return Err(CommandError::NotSwitchable { map: apply.map });
                }
                let live = *self.versions.entry(apply.map.clone()).or_insert(1);
                if let Some(expected) = apply.expect_version
                    && expected != live
                {
                    return Err(CommandError::VersionMismatch {
                        map: apply.map,
                        expected,
                        live,
                    });
                }
                let mut next: BTreeMap<Bytes, Bytes> = match apply.mode {
                    ApplyMode::Replace => BTreeMap::new(),
                    _ => view
                        .iter()
                        .map(|(k, e)| (Bytes::copy_from_slice(k), e.value.clone()))
                        .collect(),
                };
                for (key, value) in apply.entries {
                    match value {
                        Some(value) => next.insert(key, value),
                        None => next.remove(&key),
                    };
                }
                let ns = self.next_ns();
                let mut changes = Vec::new();
                for (key, _) in view.iter() {
                    if !next.contains_key(key) {
                        changes.push(Change::delete(
                            &apply.map,
                            Bytes::copy_from_slice(key),
                            EventSource::Api,
                            ns,
                        ));
                    }
                }
                for (key, value) in &next {
                    if view.get(key) != Some(value) {
                        changes.push(Change::put(
                            &apply.map,
                            key.clone(),
                            value.clone(),
                            EventSource::Api,
                            ns,
                        ));
                    }
                }
                let changed = changes.len() as u64;
                let revision = publisher.apply_as_one(changes);
                self.versions.insert(apply.map.clone(), live + 1);
                Ok(Outcome {
                    applied: Some(Applied {
                        version: live + 1,
                        entries: next.len() as u64,
                        changed,
                        switch_ns: 1,
                    }),
                    ..Outcome::at(revision)
                })
            }
            other => Err(CommandError::Unsupported {
                command: format!("{other:?}"),
            }),
        }
    }

    fn put_change(
        &mut self,
        snapshot: &Snapshot,
        put: &control::Put,
        previous: &Previous,
        op: Option<usize>,
    ) -> Result<Change, CommandError> {
        let refuse = |refusal, errno| CommandError::Refused {
            map: put.map.clone(),
            op,
            what: "put".into(),
            refusal,
            errno,
        };
        let present = previous.value.is_some();
        match put.mode {
            PutMode::NoExist if present => {
                return Err(refuse(Refusal::AlreadyExists, libc::EEXIST));
            }
            PutMode::Exist if !present => return Err(refuse(Refusal::NotFound, libc::ENOENT)),
            _ => {}
        }
        let view = snapshot.map(&put.map).expect("checked");
        if !present && view.len() >= view.info().max_entries as usize {
            return Err(refuse(Refusal::MapFull, libc::E2BIG));
        }
        Ok(Change::put(
            &put.map,
            put.key.clone(),
            put.value.clone(),
            EventSource::Api,
            self.next_ns(),
        ))
    }

    fn delete_change(
        &mut self,
        delete: &control::Delete,
        previous: &Previous,
        op: Option<usize>,
    ) -> Result<Change, CommandError> {
        if previous.value.is_none() {
            return Err(CommandError::Refused {
                map: delete.map.clone(),
                op,
                what: "delete".into(),
                refusal: Refusal::NotFound,
                errno: libc::ENOENT,
            });
        }
        Ok(Change::delete(
            &delete.map,
            delete.key.clone(),
            EventSource::Api,
            self.next_ns(),
        ))
    }
}

fn previous(snapshot: &Snapshot, map: &str, key: &[u8]) -> Result<Previous, CommandError> {
    let view = snapshot.map(map).ok_or_else(|| CommandError::UnknownMap {
        name: map.to_owned(),
    })?;
    let entry = view.entry(key);
    Ok(Previous {
        value: entry.map(|e| e.value.clone()),
        mod_revision: entry.map_or(0, |e| e.mod_revision),
    })
}

fn cas(map: &str, expected: Option<u64>, previous: &Previous) -> Result<(), CommandError> {
    match expected {
        Some(expected) if expected != previous.mod_revision => {
            Err(CommandError::ModRevisionMismatch {
                map: map.to_owned(),
                expected,
                current: previous.mod_revision,
            })
        }
        _ => Ok(()),
    }
}

fn compare_holds(result: CompareResult, target: &CompareTarget, previous: &Previous) -> bool {
    let ordering = match target {
        CompareTarget::ModRevision(revision) => previous.mod_revision.cmp(revision),
        CompareTarget::Value(value) => match &previous.value {
            Some(current) => current.as_ref().cmp(value.as_ref()),
            None => return false,
        },
        CompareTarget::Exists(exists) => previous.value.is_some().cmp(exists),
    };
    match result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// A hash map `name` with 4-byte keys, 2-byte values and room for
/// `max_entries`.
pub fn hash_map(name: &str, max_entries: u32) -> MapInfo {
    MapInfo::new(name, MapKind::Hash, 4, 2, max_entries).with_id(7)
}

pub fn key(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

/// A server with writes over a Unix socket (in a directory anyone may
/// enter, the socket anyone may connect to: the permission under test is
/// the server's own), with the fake kernel behind it.
pub struct WriteServer {
    pub client: MapSyncClient<Channel>,
    pub store: Store,
    pub fake: Fake,
    pub stats: Arc<WatchStats>,
    pub socket: PathBuf,
    pub commands: CommandHandle,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
}

/// Maps for most tests: `flows` (hash, 16 entries, keys 0 and 1 present),
/// `cfg` (hash, 4 entries, empty) and `rules` (switchable, 8 entries).
pub fn default_maps() -> Vec<MapSetup> {
    vec![
        (
            hash_map("flows", 16),
            vec![
                (key(0), Bytes::from_static(b"v0"), 1),
                (key(1), Bytes::from_static(b"v1"), 1),
            ],
        ),
        (hash_map("cfg", 4), Vec::new()),
        (
            hash_map("rules", 8).switchable(),
            vec![(key(9), Bytes::from_static(b"r9"), 1)],
        ),
    ]
}

impl WriteServer {
    pub async fn start(policy: Option<WritePolicy>) -> WriteServer {
        WriteServer::start_with(policy, Limits::default(), default_maps()).await
    }

    pub async fn start_with(
        policy: Option<WritePolicy>,
        limits: Limits,
        maps: Vec<MapSetup>,
    ) -> WriteServer {
        let (store, mut publisher) = Store::new(LogLimits::default());
        for (info, entries) in maps {
            publisher.add_map(info, entries, 0);
        }
        publisher.set_ready();
        let (commands, fake) = fake_kernel(publisher);
        let dir = tempfile::tempdir().expect("temp dir");
        set_mode(dir.path(), 0o755);
        let socket = dir.path().join("mapsync.sock");
        let listener = Listener::bind(&format!("unix:{}", socket.display()))
            .await
            .expect("bind unix");
        set_mode(&socket, 0o666);
        let (server, stop, stats) = serve(listener, &store, &commands, policy, limits);
        let client = MapSyncClient::new(unix_channel(&socket).await);
        WriteServer {
            client,
            store,
            fake,
            stats,
            socket,
            commands,
            _dir: dir,
            stop: Some(stop),
            server,
        }
    }

    /// Another server over TCP on the same store and command handle, with
    /// `policy`: its client and its stopper.
    pub async fn tcp_twin(
        &self,
        policy: WritePolicy,
    ) -> (MapSyncClient<Channel>, oneshot::Sender<()>) {
        let listener = Listener::bind("127.0.0.1:0").await.expect("bind tcp");
        let endpoint = format!("http://{}", listener.endpoint());
        let (_server, stop, _stats) = serve(
            listener,
            &self.store,
            &self.commands,
            Some(policy),
            Limits::default(),
        );
        let channel = Channel::from_shared(endpoint)
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        (MapSyncClient::new(channel), stop)
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

fn serve(
    listener: Listener,
    store: &Store,
    commands: &CommandHandle,
    policy: Option<WritePolicy>,
    limits: Limits,
) -> (
    tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
    oneshot::Sender<()>,
    Arc<WatchStats>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let stats = Arc::new(WatchStats::default());
    let options = ServeOptions {
        limits,
        stats: stats.clone(),
        writes: policy.map(|policy| (commands.clone(), policy)),
        ..ServeOptions::default()
    };
    let server = tokio::spawn(serve_with(listener, store.clone(), options, async {
        let _ = stopped.await;
    }));
    (server, stop, stats)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A channel over the Unix socket at `path`.
pub async fn unix_channel(path: &Path) -> Channel {
    let socket = path.to_owned();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect over the socket")
}
