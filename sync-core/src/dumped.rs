//! The entries of a full read of one map ([`crate::store::Dump`]), kept the
//! way the kernel hands them over: keys in one contiguous buffer, values in
//! another, one observed time per read (a batch call), no allocation per
//! entry.
//!
//! BPF maps have fixed key and value sizes, so a dump of a kernel map is
//! "flat" throughout. Entries of another shape (a dump assembled by hand, in
//! tests or from a `Vec` of pairs) are kept beside the flat ones, as
//! [`Bytes`]; everything here works for both.
//!
//! The store builds a map's base and diffs a resync from
//! [`DumpEntries::sorted`]: the entries in key order,
//! one per key (the latest read of it). For the fixed-size entries of a
//! kernel dump that is a stable radix sort of the keys' 8-byte big-endian
//! prefixes, which for keys of at most 8 bytes is the whole key.

use bytes::Bytes;

/// Every entry of a full read of one map, in the order it was read.
#[derive(Clone, Default)]
pub struct DumpEntries {
    key_size: usize,
    value_size: usize,
    /// Keys of the flat entries, `key_size` bytes each.
    keys: Vec<u8>,
    /// Values of the flat entries, `value_size` bytes each.
    values: Vec<u8>,
    /// Per read: the number of flat entries once it was added, and the
    /// CLOCK_MONOTONIC time just before it.
    reads: Vec<(usize, u64)>,
    /// Whether the reads' times never decrease.
    in_order: bool,
    /// Entries of another shape, after the flat ones.
    others: Vec<(Bytes, Bytes, u64)>,
}

impl std::fmt::Debug for DumpEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpEntries")
            .field("key_size", &self.key_size)
            .field("value_size", &self.value_size)
            .field("flat", &self.flat_len())
            .field("reads", &self.reads.len())
            .field("others", &self.others.len())
            .finish()
    }
}

/// Two dumps are equal when they hold the same entries in the same order,
/// however they are stored.
impl PartialEq for DumpEntries {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for DumpEntries {}

impl DumpEntries {
    /// An empty dump of a map whose keys and values have these sizes.
    pub fn with_shape(key_size: usize, value_size: usize) -> Self {
        Self {
            key_size,
            value_size,
            in_order: true,
            ..Self::default()
        }
    }

    /// Reserves room for `entries` more flat entries.
    pub fn reserve(&mut self, entries: usize) {
        self.keys.reserve(entries * self.key_size);
        self.values.reserve(entries * self.value_size);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.flat_len() + self.others.len()
    }

    /// Whether the dump holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn flat_len(&self) -> usize {
        self.reads.last().map_or(0, |(end, _)| *end)
    }

    fn note_read(&mut self, end: usize, observed_ns: u64) {
        match self.reads.last_mut() {
            Some((last_end, last_ns)) if *last_ns == observed_ns => *last_end = end,
            last => {
                if last.is_some_and(|(_, last_ns)| *last_ns > observed_ns) {
                    self.in_order = false;
                }
                self.reads.push((end, observed_ns));
            }
        }
    }

    /// Adds one read of up to `count` entries, made at `observed_ns`:
    /// `read` gets room for `count` keys and `count` values (zeroed, in the
    /// dump's shape, contiguous) and returns how many it filled, which are
    /// kept. An error keeps nothing and is handed back.
    pub fn read_into<E>(
        &mut self,
        count: usize,
        observed_ns: u64,
        read: impl FnOnce(&mut [u8], &mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        // entries read after one of another shape go to `others`, which
        // iterate after the flat ones: reads must come first to keep the
        // read order ("the later read wins")
        debug_assert!(
            self.others.is_empty(),
            "read_into after an entry of another shape"
        );
        let (keys_at, values_at) = (self.keys.len(), self.values.len());
        self.keys.resize(keys_at + count * self.key_size, 0);
        self.values.resize(values_at + count * self.value_size, 0);
        let result = read(&mut self.keys[keys_at..], &mut self.values[values_at..]);
        let filled = match &result {
            Ok(filled) => (*filled).min(count),
            Err(_) => 0,
        };
        self.keys.truncate(keys_at + filled * self.key_size);
        self.values.truncate(values_at + filled * self.value_size);
        if filled > 0 {
            self.note_read(self.flat_len() + filled, observed_ns);
        }
        result
    }

    /// The entries of two dumps of one shape made at the same time (two
    /// threads each reading a part of one map), as one dump whose reads are
    /// in time order, so that of a key both read the later read wins.
    /// Entries of another shape are kept after the flat ones.
    pub fn merge_by_time(self, other: DumpEntries) -> DumpEntries {
        if self.key_size != other.key_size || self.value_size != other.value_size {
            let mut merged = self;
            for (key, value, observed_ns) in other.iter() {
                merged.push(key, value, observed_ns);
            }
            return merged;
        }
        let mut merged = DumpEntries::with_shape(self.key_size, self.value_size);
        merged.reserve(self.flat_len() + other.flat_len());
        let mut reads: Vec<(u64, &DumpEntries, usize, usize)> = Vec::new();
        for part in [&self, &other] {
            let mut start = 0;
            for &(end, observed_ns) in &part.reads {
                reads.push((observed_ns, part, start, end));
                start = end;
            }
        }
        // stable: of equal times, this dump's reads first
        reads.sort_by_key(|(observed_ns, ..)| *observed_ns);
        for (observed_ns, part, start, end) in reads {
            merged
                .keys
                .extend_from_slice(&part.keys[start * part.key_size..end * part.key_size]);
            merged
                .values
                .extend_from_slice(&part.values[start * part.value_size..end * part.value_size]);
            let total = merged.flat_len() + (end - start);
            merged.note_read(total, observed_ns);
        }
        for (key, value, observed_ns) in self.others.iter().chain(&other.others) {
            merged.push(key, value, *observed_ns);
        }
        merged
    }

    /// Adds one entry read at `observed_ns`.
    pub fn push(&mut self, key: &[u8], value: &[u8], observed_ns: u64) {
        if key.len() == self.key_size && value.len() == self.value_size && self.others.is_empty() {
            self.keys.extend_from_slice(key);
            self.values.extend_from_slice(value);
            self.note_read(self.flat_len() + 1, observed_ns);
        } else {
            self.others.push((
                Bytes::copy_from_slice(key),
                Bytes::copy_from_slice(value),
                observed_ns,
            ));
        }
    }

    /// The entry at position `i` (in the order read): key, value, and the
    /// time just before the read that returned it.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> (&[u8], &[u8], u64) {
        let flat = self.flat_len();
        if i < flat {
            let read = self.reads.partition_point(|(end, _)| *end <= i);
            (self.key(i), self.value(i), self.reads[read].1)
        } else {
            let (key, value, observed_ns) = &self.others[i - flat];
            (key, value, *observed_ns)
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let flat = self.flat_len();
        if i < flat {
            &self.keys[i * self.key_size..(i + 1) * self.key_size]
        } else {
            &self.others[i - flat].0
        }
    }

    fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.value_size..(i + 1) * self.value_size]
    }

    fn observed(&self, i: usize) -> u64 {
        self.get(i).2
    }

    /// Every entry in the order read.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> + '_ {
        let flat = self.reads.iter().scan(0, |start, &(end, observed_ns)| {
            let read = (*start..end).map(move |i| (i, observed_ns));
            *start = end;
            Some(read)
        });
        flat.flatten()
            .map(|(i, observed_ns)| (self.key(i), self.value(i), observed_ns))
            .chain(
                self.others
                    .iter()
                    .map(|(key, value, observed_ns)| (&key[..], &value[..], *observed_ns)),
            )
    }
}

impl From<Vec<(Bytes, Bytes, u64)>> for DumpEntries {
    fn from(entries: Vec<(Bytes, Bytes, u64)>) -> Self {
        entries.into_iter().collect()
    }
}

/// Entries in the order given; flat while they all have the first one's
/// shape and come in time order.
impl FromIterator<(Bytes, Bytes, u64)> for DumpEntries {
    fn from_iter<T: IntoIterator<Item = (Bytes, Bytes, u64)>>(entries: T) -> Self {
        let mut entries = entries.into_iter().peekable();
        let mut dump = match entries.peek() {
            Some((key, value, _)) => Self::with_shape(key.len(), value.len()),
            None => Self::with_shape(0, 0),
        };
        for (key, value, observed_ns) in entries {
            dump.push(&key, &value, observed_ns);
        }
        dump
    }
}

/// Every entry in the order read, copied into owned [`Bytes`].
impl IntoIterator for DumpEntries {
    type Item = (Bytes, Bytes, u64);
    type IntoIter = std::vec::IntoIter<(Bytes, Bytes, u64)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
            .map(|(key, value, observed_ns)| {
                (
                    Bytes::copy_from_slice(key),
                    Bytes::copy_from_slice(value),
                    observed_ns,
                )
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

mod sort;
pub use sort::SortedDump;

#[cfg(test)]
mod tests;
