//! The fake kernel task: carries out write commands on a `Store` as the real
//! one does (one revision per request through `Publisher::apply_as_one`,
//! source `api`, the kernel's refusals for existing / absent keys and a full
//! map), or answers with an error the test queued.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mapsync_core::control::{
    self, Applied, ApplyMode, Command, CommandError, CommandHandle, CompareResult, CompareTarget,
    Outcome, Previous, PutMode, Refusal, WriteOp,
};
use mapsync_core::{Change, EventSource, Publisher, Snapshot};

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
                        .map(|(k, e)| (Bytes::copy_from_slice(k), e.value_bytes()))
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
        value: entry.map(|e| e.value_bytes()),
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
