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

    /// The entries in key order (bytewise), one per key: of a key read more
    /// than once, the latest read (on equal times, the one read last).
    pub fn sorted(&self) -> SortedDump<'_> {
        let n = self.len();
        assert!(n < u32::MAX as usize, "a dump holds under 4G entries");
        if !(self.others.is_empty() && self.in_order) {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|a, b| {
                let (a, b) = (*a as usize, *b as usize);
                self.key(a)
                    .cmp(self.key(b))
                    .then_with(|| self.observed(a).cmp(&self.observed(b)))
            });
            self.keep_last(&mut order);
            return SortedDump {
                dump: self,
                order,
                short_keys: Vec::new(),
            };
        }
        let sorted = radix_sort((0..n as u32).map(|i| (prefix(self.key(i as usize)), i)), n);
        if self.key_size > 8 {
            let mut order: Vec<u32> = sorted.iter().map(|(_, i)| *i).collect();
            // equal prefixes: order by the whole key, stably (the dump's
            // order, which is the order of the reads' times)
            let mut start = 0;
            while start < n {
                let end = start
                    + sorted[start..]
                        .iter()
                        .take_while(|(p, _)| *p == sorted[start].0)
                        .count();
                order[start..end].sort_by(|a, b| self.key(*a as usize).cmp(self.key(*b as usize)));
                start = end;
            }
            self.keep_last(&mut order);
            return SortedDump {
                dump: self,
                order,
                short_keys: Vec::new(),
            };
        }
        // keys of at most 8 bytes, all of one length: the prefix is the key,
        // and the sorted prefixes serve as the keys (no read of the dump's
        // key buffer in hash order)
        let mut order = Vec::with_capacity(n);
        let mut short_keys: Vec<[u8; 8]> = Vec::with_capacity(n);
        for (p, i) in sorted {
            let key = p.to_be_bytes();
            if short_keys.last() == Some(&key) {
                *order.last_mut().expect("one per key") = i;
            } else {
                short_keys.push(key);
                order.push(i);
            }
        }
        SortedDump {
            dump: self,
            order,
            short_keys,
        }
    }

    /// Of equal keys, adjacent in `order` and oldest first, keeps the last.
    fn keep_last(&self, order: &mut Vec<u32>) {
        let mut kept = 0;
        for at in 0..order.len() {
            let i = order[at];
            if kept > 0 && self.key(order[kept - 1] as usize) == self.key(i as usize) {
                order[kept - 1] = i;
            } else {
                order[kept] = i;
                kept += 1;
            }
        }
        order.truncate(kept);
    }
}

/// A dump's entries in key order, one per key ([`DumpEntries::sorted`]).
#[derive(Debug)]
pub struct SortedDump<'a> {
    dump: &'a DumpEntries,
    /// Position in the dump of each entry, in key order.
    order: Vec<u32>,
    /// The keys in that order, when they are at most 8 bytes (big-endian,
    /// the key in the first `key_size` bytes); empty otherwise.
    short_keys: Vec<[u8; 8]>,
}

impl SortedDump<'_> {
    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Key, value and observed time of each key, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8], u64)> + '_ {
        let key_size = self.dump.key_size;
        self.order.iter().enumerate().map(move |(n, i)| {
            let (key, value, observed_ns) = self.dump.get(*i as usize);
            match self.short_keys.get(n) {
                Some(short) => (&short[..key_size], value, observed_ns),
                None => (key, value, observed_ns),
            }
        })
    }
}

/// The first 8 bytes of `key` as a big-endian number (zero-padded): its
/// order is the keys' bytewise order, and for keys of one length up to 8
/// bytes, equal prefixes are equal keys.
fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// A stable least-significant-digit radix sort of `n` (prefix, position)
/// pairs by prefix, 8 bits per pass; a pass whose digit is the same in
/// every prefix is skipped (small integer keys in native order share most
/// of their bytes).
fn radix_sort(items: impl Iterator<Item = (u64, u32)>, n: usize) -> Vec<(u64, u32)> {
    let mut from: Vec<(u64, u32)> = Vec::with_capacity(n);
    from.extend(items);
    let mut counts = [[0usize; 256]; 8];
    for (p, _) in &from {
        for (digit, count) in counts.iter_mut().enumerate() {
            count[(p >> (digit * 8)) as usize & 0xff] += 1;
        }
    }
    let mut to = vec![(0u64, 0u32); n];
    for (digit, count) in counts.iter().enumerate() {
        if count.contains(&n) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (slot, c) in next.iter_mut().zip(count) {
            *slot = sum;
            sum += c;
        }
        let shift = digit * 8;
        for item in &from {
            let bucket = (item.0 >> shift) as usize & 0xff;
            to[next[bucket]] = *item;
            next[bucket] += 1;
        }
        std::mem::swap(&mut from, &mut to);
    }
    from
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

#[cfg(test)]
mod tests;
