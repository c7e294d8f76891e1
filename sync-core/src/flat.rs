//! The read-optimized base of one map's entries: every record stored inline
//! in one byte array, sorted by key, with an open-addressing hash index of
//! `u32` positions over it.
//!
//! BPF maps have fixed key and value sizes, so a base whose records all have
//! the same shape ([`Layout::Fixed`]) stores nothing but the key, the value
//! and two `u64`s (revision and observed time) per entry, plus 4 bytes of
//! index per bucket at a load of at most 5/8: about 1.9x the raw bytes of an
//! 8-byte-key, 16-byte-value map. Records of varying sizes (tests, maps fed
//! directly) fall back to [`Layout::Var`], with a length header and an offset
//! per record.
//!
//! A base never changes once built: recent changes live in the overlay
//! (`entries.rs`) and are merged into a new base in one linear pass.

use std::sync::OnceLock;

/// Bytes of revision and observed time stored after each record's value.
const META: usize = 16;
/// Header of a record in [`Layout::Var`]: key length and value length (`u32`).
const VAR_HEADER: usize = 8;

/// The process-wide random hash seed (keys can come from outsiders).
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(rand::random::<u64>)
}

fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;

/// A seeded 64-bit hash of `bytes` (word-at-a-time folded multiply).
pub(crate) fn hash_bytes(state: u64, bytes: &[u8]) -> u64 {
    let mut h = state ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("8-byte chunk"));
        h = fold(h ^ word, K2);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(tail), K2);
    }
    fold(h, K1)
}

/// [`hash_bytes`] of one 8-byte key, as one word (the same value).
fn hash_word(state: u64, word: u64) -> u64 {
    fold(fold(state ^ 8u64.wrapping_mul(K1) ^ word, K2), K1)
}

/// The hash of a key as the base index and the top table compute it.
#[inline]
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(key) {
        Ok(word) => hash_word(seed(), u64::from_le_bytes(word)),
        Err(_) => hash_bytes(seed(), key),
    }
}

/// How the records of a base are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Every record is `key | value | revision | observed`, of one size.
    Fixed {
        /// Key bytes.
        key: usize,
        /// Value bytes.
        value: usize,
    },
    /// Each record is `key len | value len | key | value | revision |
    /// observed`, found through an offset.
    Var,
}

/// One record of a base, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    pub(crate) mod_revision: u64,
    pub(crate) observed_ns: u64,
}

/// An immutable, sorted, hash-indexed set of records.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    layout: Layout,
    bytes: Vec<u8>,
    /// Start of each record ([`Layout::Var`] only).
    offsets: Vec<usize>,
    len: usize,
    /// Per bucket 0 (empty) or record position + 1; in a base of under
    /// [`TAGGED_BELOW`] records the top 8 bits hold 8 bits of the key's hash
    /// instead, so that a probe past another key rarely reads its record (a
    /// cache miss each).
    index: Box<[u32]>,
}

/// Bases with fewer records than this keep a hash tag in each bucket.
const TAGGED_BELOW: usize = 1 << 24;
/// The position bits of a tagged bucket.
const POSITION_BITS: u32 = (1 << 24) - 1;

/// The first 8 bytes of `key` as a big-endian number, zero-padded: its
/// order is the keys' bytewise order, and for keys of one length up to 8
/// bytes equal prefixes are equal keys (the dump's radix sort, key order).
pub(crate) fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// Bytewise order of two keys. An 8-byte key (the common BPF key) compares
/// as one big-endian word, keys of one shorter length as their
/// [`key_prefix`]es, not by a `memcmp` call. The one key order of the
/// mirror: levels, the dump's sort, a resync's diff.
pub(crate) fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (<[u8; 8]>::try_from(a), <[u8; 8]>::try_from(b)) {
        (Ok(a), Ok(b)) => u64::from_be_bytes(a).cmp(&u64::from_be_bytes(b)),
        _ if a.len() == b.len() && a.len() < 8 => key_prefix(a).cmp(&key_prefix(b)),
        _ => a.cmp(b),
    }
}

/// The bucket value for record `i` with key hash `hash` in a base of `len`.
fn bucket_value(i: usize, hash: u64, len: usize) -> u32 {
    let position = i as u32 + 1;
    if len < TAGGED_BELOW {
        position | (hash as u32) << 24
    } else {
        position
    }
}

impl Default for Base {
    fn default() -> Self {
        BaseBuilder::new(0).finish()
    }
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// The bucket a hash starts probing at, for `buckets` buckets.
fn home(hash: u64, buckets: usize) -> usize {
    ((u128::from(hash) * buckets as u128) >> 64) as usize
}

impl Base {
    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held (records, offsets, index).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.offsets.capacity() * size_of::<usize>()
            + self.index.len() * size_of::<u32>()
    }

    /// The record at position `i` (in key order).
    #[inline]
    pub(crate) fn record(&self, i: usize) -> Record<'_> {
        let (key_len, value_len, start) = match self.layout {
            Layout::Fixed { key, value } => (key, value, i * (key + value + META)),
            Layout::Var => {
                let at = self.offsets[i];
                (
                    read_u32(&self.bytes, at),
                    read_u32(&self.bytes, at + 4),
                    at + VAR_HEADER,
                )
            }
        };
        let value_at = start + key_len;
        let meta_at = value_at + value_len;
        Record {
            key: &self.bytes[start..value_at],
            value: &self.bytes[value_at..meta_at],
            mod_revision: read_u64(&self.bytes, meta_at),
            observed_ns: read_u64(&self.bytes, meta_at + 8),
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        match self.layout {
            Layout::Fixed { key, value } => {
                let start = i * (key + value + META);
                &self.bytes[start..start + key]
            }
            Layout::Var => self.record(i).key,
        }
    }

    /// Position of `key`, if present.
    #[inline]
    pub(crate) fn find(&self, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let hash = hash_key(key);
        match (self.layout, <[u8; 8]>::try_from(key)) {
            // the common BPF shape: compare one word, not a slice
            (Layout::Fixed { key: 8, value }, Ok(word)) => {
                let (word, stride) = (u64::from_ne_bytes(word), 8 + value + META);
                self.probe(hash, |i| read_u64(&self.bytes, i * stride) == word)
            }
            _ => self.probe(hash, |i| self.key(i) == key),
        }
    }

    /// Walks the buckets from `hash`'s home to the first record `is_key`
    /// accepts (skipping buckets whose tag differs), or to an empty bucket.
    #[inline(always)]
    fn probe(&self, hash: u64, is_key: impl Fn(usize) -> bool) -> Option<usize> {
        let buckets = self.index.len();
        let (tag, mask) = if self.len < TAGGED_BELOW {
            ((hash as u32) << 24, POSITION_BITS)
        } else {
            (0, u32::MAX)
        };
        let mut bucket = home(hash, buckets);
        loop {
            let slot = self.index[bucket];
            if slot == 0 {
                return None;
            }
            if slot & !mask == tag {
                let i = (slot & mask) as usize - 1;
                if is_key(i) {
                    return Some(i);
                }
            }
            bucket += 1;
            if bucket == buckets {
                bucket = 0;
            }
        }
    }

    /// The record of `key`, if present.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<Record<'_>> {
        self.find(key).map(|i| self.record(i))
    }

    /// Position of the first record with a key strictly after `after`.
    pub(crate) fn position_after(&self, after: &[u8]) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.key(middle) <= after {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }
}

impl Base {
    /// A copy of this base with new values (and revisions, observed times)
    /// for keys it holds: the same records, order and index, so no sort and
    /// no rehash (two `memcpy`s, then one lookup per change). `None` if a
    /// key is absent or a value's length differs from the record's (then
    /// the caller rebuilds). Later changes of one key win.
    pub(crate) fn with_values<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a [u8], &'a [u8], u64, u64)>,
    ) -> Option<Base> {
        let mut copy = self.clone();
        for (key, value, mod_revision, observed_ns) in changes {
            let i = self.find(key)?;
            let (value_at, value_len) = match self.layout {
                Layout::Fixed { key, value } => (i * (key + value + META) + key, value),
                Layout::Var => {
                    let at = self.offsets[i];
                    (
                        at + VAR_HEADER + read_u32(&self.bytes, at),
                        read_u32(&self.bytes, at + 4),
                    )
                }
            };
            if value.len() != value_len {
                return None;
            }
            let meta_at = value_at + value_len;
            copy.bytes[value_at..meta_at].copy_from_slice(value);
            copy.bytes[meta_at..meta_at + 8].copy_from_slice(&mod_revision.to_ne_bytes());
            copy.bytes[meta_at + 8..meta_at + 16].copy_from_slice(&observed_ns.to_ne_bytes());
        }
        Some(copy)
    }
}

/// Builds a [`Base`] from records pushed in strictly increasing key order.
#[derive(Debug)]
pub(crate) struct BaseBuilder {
    layout: Option<Layout>,
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    len: usize,
    capacity: usize,
}

impl BaseBuilder {
    /// A builder expecting about `capacity` records.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            layout: None,
            bytes: Vec::new(),
            offsets: Vec::new(),
            len: 0,
            capacity,
        }
    }

    /// Appends a record; keys must come in strictly increasing order.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8], mod_revision: u64, observed_ns: u64) {
        let layout = *self.layout.get_or_insert(Layout::Fixed {
            key: key.len(),
            value: value.len(),
        });
        match layout {
            Layout::Fixed { key: k, value: v } if k == key.len() && v == value.len() => {
                if self.bytes.is_empty() {
                    self.bytes
                        .reserve_exact(self.capacity.max(1) * (k + v + META));
                }
            }
            Layout::Fixed { .. } => {
                self.switch_to_var();
                self.push_var_header(key, value);
            }
            Layout::Var => self.push_var_header(key, value),
        }
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.bytes.extend_from_slice(&mod_revision.to_ne_bytes());
        self.bytes.extend_from_slice(&observed_ns.to_ne_bytes());
        self.len += 1;
    }

    fn push_var_header(&mut self, key: &[u8], value: &[u8]) {
        self.offsets.push(self.bytes.len());
        let key_len = u32::try_from(key.len()).expect("key under 4 GiB");
        let value_len = u32::try_from(value.len()).expect("value under 4 GiB");
        self.bytes.extend_from_slice(&key_len.to_ne_bytes());
        self.bytes.extend_from_slice(&value_len.to_ne_bytes());
    }

    /// Re-encodes the fixed records written so far with [`Layout::Var`].
    fn switch_to_var(&mut self) {
        let Some(Layout::Fixed { key, value }) = self.layout else {
            return;
        };
        let fixed = std::mem::take(&mut self.bytes);
        self.layout = Some(Layout::Var);
        for record in fixed.chunks_exact(key + value + META) {
            self.push_var_header(&record[..key], &record[key..key + value]);
            self.bytes.extend_from_slice(record);
        }
    }

    /// The finished base, with its hash index.
    pub(crate) fn finish(mut self) -> Base {
        self.bytes.shrink_to_fit();
        self.offsets.shrink_to_fit();
        let buckets = (self.len * 8 / 5 + 1).max(8);
        let index = vec![0u32; buckets].into_boxed_slice();
        let mut base = Base {
            layout: self.layout.unwrap_or(Layout::Var),
            bytes: self.bytes,
            offsets: self.offsets,
            len: self.len,
            index,
        };
        assert!(
            base.len < u32::MAX as usize,
            "a base holds under 4G records"
        );
        // inserted in the order of their home buckets, the records fill the
        // index front to back instead of at random (a cache and TLB miss
        // each in a large index); linear probing ends with the same probe
        // lengths whatever the order of insertion
        let homes = by_home(
            (0..base.len).map(|i| {
                let hash = hash_key(base.key(i));
                (home(hash, buckets) as u32, bucket_value(i, hash, base.len))
            }),
            base.len,
            buckets,
        );
        for (home, value) in homes {
            let mut bucket = home as usize;
            while base.index[bucket] != 0 {
                bucket += 1;
                if bucket == buckets {
                    bucket = 0;
                }
            }
            base.index[bucket] = value;
        }
        base
    }
}

/// `n` (home bucket, bucket value) pairs in order of home bucket, by a
/// least-significant-digit radix sort (11 bits a pass) over the bits that
/// a home below `buckets` can have.
fn by_home(pairs: impl Iterator<Item = (u32, u32)>, n: usize, buckets: usize) -> Vec<(u32, u32)> {
    const BITS: u32 = 11;
    let mut from: Vec<(u32, u32)> = Vec::with_capacity(n);
    from.extend(pairs);
    let width = usize::BITS - buckets.leading_zeros();
    let mut to = vec![(0u32, 0u32); n];
    let mut shift = 0;
    while shift < width {
        let mut next = [0usize; 1 << BITS];
        for (home, _) in &from {
            next[(*home >> shift) as usize & ((1 << BITS) - 1)] += 1;
        }
        let mut sum = 0;
        for slot in next.iter_mut() {
            let count = *slot;
            *slot = sum;
            sum += count;
        }
        for pair in &from {
            let digit = (pair.0 >> shift) as usize & ((1 << BITS) - 1);
            to[next[digit]] = *pair;
            next[digit] += 1;
        }
        std::mem::swap(&mut from, &mut to);
        shift += BITS;
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_records_are_found_by_key_and_by_position() {
        let mut builder = BaseBuilder::new(1000);
        for i in 0..1000u64 {
            builder.push(&i.to_be_bytes(), &(i * 3).to_ne_bytes(), i + 1, i * 10);
        }
        let base = builder.finish();
        assert_eq!(base.layout, Layout::Fixed { key: 8, value: 8 });
        assert_eq!(base.len(), 1000);
        for i in 0..1000u64 {
            let record = base.get(&i.to_be_bytes()).expect("present");
            assert_eq!(record.value, (i * 3).to_ne_bytes());
            assert_eq!((record.mod_revision, record.observed_ns), (i + 1, i * 10));
        }
        assert!(base.get(&1000u64.to_be_bytes()).is_none());
        assert!(base.get(b"short").is_none());
        assert_eq!(base.position_after(&499u64.to_be_bytes()), 500);
        assert_eq!(base.position_after(b""), 0);
        assert_eq!(base.position_after(&[0xff; 9]), 1000);
    }

    #[test]
    fn the_word_hash_of_8_byte_keys_is_the_byte_hash() {
        let mut state = 7u64;
        for _ in 0..1000 {
            state = state.wrapping_mul(K1).wrapping_add(K2);
            let key = state.to_le_bytes();
            assert_eq!(hash_key(&key), hash_bytes(seed(), &key));
        }
    }

    #[test]
    fn fixed_8_byte_keys_miss_on_other_lengths_and_absent_words() {
        let mut builder = BaseBuilder::new(100);
        for i in 0..100u64 {
            builder.push(&(i * 2).to_be_bytes(), &[1; 16], i + 1, 0);
        }
        let base = builder.finish();
        for i in 0..100u64 {
            assert_eq!(base.find(&(i * 2).to_be_bytes()), Some(i as usize));
            assert_eq!(base.find(&(i * 2 + 1).to_be_bytes()), None);
        }
        assert_eq!(base.find(&[0; 7]), None);
        assert_eq!(base.find(&[0; 9]), None);
    }

    #[test]
    fn records_of_mixed_sizes_switch_to_the_variable_layout() {
        let mut builder = BaseBuilder::new(3);
        builder.push(b"a", b"1", 1, 1);
        builder.push(b"b", b"22", 2, 2);
        builder.push(b"cc", b"", 3, 3);
        let base = builder.finish();
        assert_eq!(base.layout, Layout::Var);
        let keys: Vec<_> = (0..3).map(|i| base.record(i).key.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"cc".to_vec()]);
        assert_eq!(base.get(b"a").expect("a").value, b"1");
        assert_eq!(base.get(b"b").expect("b").value, b"22");
        assert_eq!(base.get(b"cc").expect("cc").mod_revision, 3);
        assert!(base.get(b"c").is_none());
        assert!(Base::default().get(b"a").is_none());
    }

    #[test]
    fn a_fixed_base_of_8_and_16_byte_records_is_under_twice_the_raw_bytes() {
        let n = 100_000usize;
        let mut builder = BaseBuilder::new(n);
        for i in 0..n as u64 {
            builder.push(&i.to_be_bytes(), &[7u8; 16], 1, 1);
        }
        let base = builder.finish();
        assert!(
            base.heap_bytes() <= 2 * 24 * n,
            "{} bytes for {n} entries",
            base.heap_bytes()
        );
    }
}
