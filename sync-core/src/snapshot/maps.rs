//! The maps of a snapshot, by name and by [`MapHandle`].
//!
//! Each map lives in a slot of a plain `Vec`; a name keeps its slot for the
//! store's whole life (a removed map leaves its slot empty, and a map added
//! again under that name gets the same slot back). A [`MapHandle`] is the
//! slot's index plus the store's identity, so a read through it is a bounds
//! check, an identity compare and a `Vec` index: no name lookup. Cloning the
//! maps for a new snapshot copies the `Vec` (one reference count or so per
//! map) and shares the name index.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::MapView;

/// A mirrored map resolved once, for reads that skip the lookup by name:
/// [`crate::Snapshot::view`]. Stays valid across snapshots for as long as
/// the store lives; a read through it answers [`HandleError::Removed`] while
/// the map is not mirrored, and finds the map again if it is added back
/// under the same name.
#[derive(Debug, Clone)]
pub struct MapHandle {
    store: u64,
    slot: u32,
    name: Arc<str>,
}

impl MapHandle {
    /// The name of the map this handle reads.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why a read through a [`MapHandle`] found no map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The map was removed from the mirror (and not added back).
    #[error("map `{name}` is no longer mirrored")]
    Removed {
        /// The handle's map.
        name: String,
    },
    /// The handle was resolved on another store.
    #[error("the handle of map `{name}` belongs to another store")]
    OtherStore {
        /// The handle's map.
        name: String,
    },
}

/// Up to this many slots, a lookup by name scans them instead of the index.
const LINEAR_LOOKUP: usize = 8;

/// Source of store identities (one per empty snapshot a store starts from).
static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone)]
struct Slot {
    name: Arc<str>,
    view: Option<MapView>,
}

/// Every map of a snapshot: slots by index, and a name index in name order.
#[derive(Debug, Clone)]
pub(crate) struct Maps {
    /// Which store these maps belong to (compared with a handle's).
    store: u64,
    slots: Vec<Slot>,
    /// Slot of every name ever added (only grows when a new name is added).
    by_name: Arc<BTreeMap<Arc<str>, u32>>,
}

impl Maps {
    /// No maps, for a new store.
    pub(crate) fn new() -> Self {
        Self {
            store: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            slots: Vec::new(),
            by_name: Arc::default(),
        }
    }

    #[inline]
    fn slot<Q>(&self, name: &Q) -> Option<usize>
    where
        Arc<str>: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        // a few maps (the usual case): one pass over the slots' names beats
        // the tree's comparisons and pointer chasing
        if self.slots.len() <= LINEAR_LOOKUP {
            return self
                .slots
                .iter()
                .position(|slot| <Arc<str> as Borrow<Q>>::borrow(&slot.name) == name);
        }
        self.by_name.get(name).map(|slot| *slot as usize)
    }

    /// The map called `name`, if mirrored.
    #[inline]
    pub(crate) fn get<Q>(&self, name: &Q) -> Option<&MapView>
    where
        Arc<str>: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.slots[self.slot(name)?].view.as_ref()
    }

    /// The map called `name`, to change, if mirrored.
    pub(crate) fn get_mut<Q>(&mut self, name: &Q) -> Option<&mut MapView>
    where
        Arc<str>: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let slot = self.slot(name)?;
        self.slots[slot].view.as_mut()
    }

    /// The slot of the map called `name` and the map, to change, if
    /// mirrored.
    pub(crate) fn slot_mut<Q>(&mut self, name: &Q) -> Option<(u32, &mut MapView)>
    where
        Arc<str>: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let slot = self.slot(name)?;
        let view = self.slots[slot].view.as_mut()?;
        Some((slot as u32, view))
    }

    /// The map in slot `slot`, if mirrored.
    pub(crate) fn at(&self, slot: u32) -> Option<&MapView> {
        self.slots.get(slot as usize)?.view.as_ref()
    }

    /// The map in slot `slot`, to change, if mirrored.
    pub(crate) fn at_mut(&mut self, slot: u32) -> Option<&mut MapView> {
        self.slots.get_mut(slot as usize)?.view.as_mut()
    }

    /// Whether `other` has the same slots (the same store, no map added
    /// or removed in between): what a reused snapshot's maps need to be
    /// brought up to date slot by slot.
    pub(crate) fn same_layout(&self, other: &Maps) -> bool {
        self.store == other.store
            && Arc::ptr_eq(&self.by_name, &other.by_name)
            && self.slots.len() == other.slots.len()
            && self
                .slots
                .iter()
                .zip(&other.slots)
                .all(|(mine, theirs)| mine.view.is_some() == theirs.view.is_some())
    }

    /// Sets the map called `name`, returning the one it replaces.
    pub(crate) fn insert(&mut self, name: Arc<str>, view: MapView) -> Option<MapView> {
        match self.slot(&*name) {
            Some(slot) => self.slots[slot].view.replace(view),
            None => {
                let slot = u32::try_from(self.slots.len()).expect("under 4G maps");
                self.slots.push(Slot {
                    name: name.clone(),
                    view: Some(view),
                });
                Arc::make_mut(&mut self.by_name).insert(name, slot);
                None
            }
        }
    }

    /// Removes the map called `name`, returning it; its slot stays its own.
    pub(crate) fn remove<Q>(&mut self, name: &Q) -> Option<MapView>
    where
        Arc<str>: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let slot = self.slot(name)?;
        self.slots[slot].view.take()
    }

    /// Mirrored maps in name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &MapView)> {
        self.by_name.iter().filter_map(|(name, slot)| {
            let view = self.slots[*slot as usize].view.as_ref()?;
            Some((name, view))
        })
    }

    /// A handle on the map called `name`, if mirrored.
    pub(crate) fn handle(&self, name: &str) -> Option<MapHandle> {
        let slot = self.slot(name)?;
        let entry = &self.slots[slot];
        entry.view.as_ref()?;
        Some(MapHandle {
            store: self.store,
            slot: slot as u32,
            name: entry.name.clone(),
        })
    }

    /// The map `handle` reads.
    #[inline]
    pub(crate) fn view(&self, handle: &MapHandle) -> Result<&MapView, HandleError> {
        if handle.store != self.store {
            return Err(HandleError::OtherStore {
                name: handle.name.to_string(),
            });
        }
        // a handle of this store names a slot that exists in every later
        // snapshot (slots are never dropped)
        match self.slots.get(handle.slot as usize) {
            Some(Slot {
                view: Some(view), ..
            }) => Ok(view),
            _ => Err(HandleError::Removed {
                name: handle.name.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::LogLimits;
    use crate::event::EventSource;
    use crate::map_info::{MapInfo, MapKind};
    use crate::store::{Change, Store};
    use bytes::Bytes;

    fn info(name: &str) -> MapInfo {
        MapInfo::new(name, MapKind::Hash, 1, 1, 64).with_id(1)
    }

    fn one(key: u8, value: u8) -> Vec<(Bytes, Bytes, u64)> {
        vec![(Bytes::from(vec![key]), Bytes::from(vec![value]), 1)]
    }

    #[test]
    fn a_handle_reads_its_map_across_snapshots() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(info("a"), one(1, 10), 0);
        writer.add_map(info("b"), one(1, 20), 0);
        let handle = store.handle("b").expect("b is mirrored");
        assert_eq!(handle.name(), "b");
        let read = |handle: &MapHandle| {
            store
                .load()
                .view(handle)
                .map(|m| m.get(&[1]).map(<[u8]>::to_vec))
        };
        assert_eq!(read(&handle), Ok(Some(vec![20])));
        writer.apply([Change::put("b", &[1][..], &[21][..], EventSource::Trace, 2)]);
        assert_eq!(read(&handle), Ok(Some(vec![21])));
        writer.add_map(info("c"), one(1, 30), 0);
        assert_eq!(read(&handle), Ok(Some(vec![21])), "another map added");
        assert!(store.handle("zzz").is_err(), "no handle for an unknown map");
    }

    #[test]
    fn a_removed_map_is_reported_and_found_again_when_re_added() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(info("a"), one(1, 10), 0);
        writer.add_map(info("b"), one(1, 20), 0);
        let handle = store.handle("a").expect("a is mirrored");
        let before = store.snapshot();
        assert!(writer.remove_map("a"));
        assert!(!writer.remove_map("a"), "already removed");
        assert_eq!(
            store.load().view(&handle).map(MapView::len),
            Err(HandleError::Removed { name: "a".into() })
        );
        assert!(store.load().map("a").is_none());
        assert!(store.handle("a").is_err());
        let names: Vec<String> = store.load().maps().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(
            before
                .view(&handle)
                .map(|m| m.get(&[1]).map(<[u8]>::to_vec)),
            Ok(Some(vec![10])),
            "an older snapshot still holds the map"
        );

        writer.add_map(info("a"), one(2, 11), 0);
        let snapshot = store.load();
        let view = snapshot
            .view(&handle)
            .expect("re-added under the same name");
        assert_eq!(view.get(&[2]), Some(&[11][..]));
        assert_eq!(view.get(&[1]), None);
        assert_eq!(store.handle("a").expect("mirrored").slot, handle.slot);
    }

    #[test]
    fn a_handle_of_another_store_is_refused() {
        let (first, mut first_writer) = Store::new(LogLimits::default());
        let (second, mut second_writer) = Store::new(LogLimits::default());
        first_writer.add_map(info("a"), one(1, 10), 0);
        second_writer.add_map(info("a"), one(1, 99), 0);
        let handle = first.handle("a").expect("mirrored");
        assert_eq!(
            second.load().view(&handle).map(MapView::len),
            Err(HandleError::OtherStore { name: "a".into() })
        );
        assert!(first.load().view(&handle).is_ok());
    }

    #[test]
    fn lookups_by_name_and_handle_agree_past_the_linear_scan() {
        let (store, mut writer) = Store::new(LogLimits::default());
        let names: Vec<String> = (0..3 * LINEAR_LOOKUP)
            .map(|i| format!("map{i:02}"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            writer.add_map(info(name), one(1, i as u8), 0);
            let snapshot = store.load();
            for (j, name) in names[..=i].iter().enumerate() {
                let by_name = snapshot.map(name).expect("added").get(&[1]);
                let handle = snapshot.map_handle(name).expect("added");
                assert_eq!(by_name, Some(&[j as u8][..]));
                assert_eq!(snapshot.view(&handle).expect("mirrored").get(&[1]), by_name);
            }
            assert!(snapshot.map("map").is_none());
            assert!(snapshot.map("map999").is_none());
        }
    }

    #[test]
    fn maps_iterate_in_name_order_whatever_the_order_added() {
        let (store, mut writer) = Store::new(LogLimits::default());
        for name in ["m", "c", "x", "a"] {
            writer.add_map(info(name), Vec::new(), 0);
        }
        let names: Vec<String> = store.load().maps().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["a", "c", "m", "x"]);
    }
}
