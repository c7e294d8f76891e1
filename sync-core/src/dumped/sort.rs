//! Dumped entries in key order ([`DumpEntries::sorted`]): a stable LSD radix
//! sort on the keys' 8-byte big-endian prefix, with the values carried
//! along for short keys and small values.

use super::DumpEntries;
use crate::flat::key_prefix;

impl DumpEntries {
    /// The entries in key order (bytewise), one per key: of a key read more
    /// than once, the latest read (on equal times, the one read last).
    pub fn sorted(&self) -> SortedDump<'_> {
        let n = self.len();
        assert!(n < u32::MAX as usize, "a dump holds under 4G entries");
        let flat_in_order = self.others.is_empty() && self.in_order;
        let sorted = if flat_in_order && self.key_size <= 8 && self.value_size <= PACKED_VALUE_MAX {
            Sorted::Packed(self.packed_sort())
        } else if flat_in_order {
            let by_prefix = radix_sort(
                (0..n as u32).map(|i| (key_prefix(self.key(i as usize)), i)),
                n,
            );
            let mut order: Vec<u32> = by_prefix.iter().map(|(_, i)| *i).collect();
            if self.key_size > 8 {
                // equal prefixes: order by the whole key, stably (the
                // dump's order, which is the order of the reads' times)
                let mut start = 0;
                while start < n {
                    let end = start
                        + by_prefix[start..]
                            .iter()
                            .take_while(|(p, _)| *p == by_prefix[start].0)
                            .count();
                    order[start..end]
                        .sort_by(|a, b| self.key(*a as usize).cmp(self.key(*b as usize)));
                    start = end;
                }
            }
            self.keep_last(&mut order);
            Sorted::Index(order)
        } else {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|a, b| {
                let (a, b) = (*a as usize, *b as usize);
                self.key(a)
                    .cmp(self.key(b))
                    .then_with(|| self.observed(a).cmp(&self.observed(b)))
            });
            self.keep_last(&mut order);
            Sorted::Index(order)
        };
        SortedDump { dump: self, sorted }
    }

    /// The flat entries as packed records (key, observed time, value),
    /// sorted by key, one per key: keys of at most 8 bytes and small values
    /// travel together through the sort, so that nothing after it reads the
    /// dump's buffers in hash order (a cache and TLB miss per entry).
    fn packed_sort(&self) -> Vec<u8> {
        let (key_size, value_size) = (self.key_size, self.value_size);
        let stride = packed_stride(value_size);
        let n = self.flat_len();
        let mut records = vec![0u8; n * stride];
        let mut start = 0;
        let mut out = records.chunks_exact_mut(stride);
        for &(end, observed_ns) in &self.reads {
            for i in start..end {
                let record = out.next().expect("one record per entry");
                // the key zero-padded to 8 bytes: its big-endian prefix
                record[..key_size].copy_from_slice(self.key(i));
                record[8..PACKED_VALUE_AT].copy_from_slice(&observed_ns.to_ne_bytes());
                record[PACKED_VALUE_AT..PACKED_VALUE_AT + value_size]
                    .copy_from_slice(self.value(i));
            }
            start = end;
        }
        let mut records = radix_sort_records(records, stride);
        // of equal keys, now adjacent and oldest first, keep the last
        let mut kept = 0;
        for at in 0..n {
            let same =
                kept > 0 && records[(kept - 1) * stride..][..8] == records[at * stride..][..8];
            if same {
                kept -= 1;
            }
            if kept != at {
                records.copy_within(at * stride..(at + 1) * stride, kept * stride);
            }
            kept += 1;
        }
        records.truncate(kept * stride);
        records
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

/// Values up to this many bytes are sorted with their keys (`Sorted::Packed`).
const PACKED_VALUE_MAX: usize = 64;
/// Where a packed record's value starts: after the 8-byte key (zero
/// padded) and the 8-byte observed time.
const PACKED_VALUE_AT: usize = 16;

/// A dump's entries in key order, one per key ([`DumpEntries::sorted`]).
#[derive(Debug)]
pub struct SortedDump<'a> {
    dump: &'a DumpEntries,
    sorted: Sorted,
}

#[derive(Debug)]
enum Sorted {
    /// Positions in the dump, in key order.
    Index(Vec<u32>),
    /// Packed records in key order: the key zero-padded to 8 bytes, the
    /// observed time, the value (`PACKED_VALUE_AT + value_size` bytes each).
    Packed(Vec<u8>),
}

impl SortedDump<'_> {
    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        match &self.sorted {
            Sorted::Index(order) => order.len(),
            Sorted::Packed(records) => records.len() / packed_stride(self.dump.value_size),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Key, value and observed time of each key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> + '_ {
        let (index, packed) = match &self.sorted {
            Sorted::Index(order) => (Some(order.iter()), None),
            Sorted::Packed(records) => (
                None,
                Some(records.chunks_exact(packed_stride(self.dump.value_size))),
            ),
        };
        let (key_size, value_size) = (self.dump.key_size, self.dump.value_size);
        let index = index
            .into_iter()
            .flatten()
            .map(|i| self.dump.get(*i as usize));
        let packed = packed.into_iter().flatten().map(move |record| {
            let observed_ns = u64::from_ne_bytes(
                record[8..PACKED_VALUE_AT]
                    .try_into()
                    .expect("8 bytes of time"),
            );
            (
                &record[..key_size],
                &record[PACKED_VALUE_AT..PACKED_VALUE_AT + value_size],
                observed_ns,
            )
        });
        index.chain(packed)
    }
}

/// Bytes of a packed record with a value of `value_size` bytes: rounded up
/// to whole words, so that the sort moves records of a size it knows.
fn packed_stride(value_size: usize) -> usize {
    PACKED_VALUE_AT + value_size.div_ceil(8) * 8
}

/// [`radix_sort_fixed`] for records of `stride` bytes, a multiple of 8
/// from 16 to `packed_stride(PACKED_VALUE_MAX)`.
fn radix_sort_records(records: Vec<u8>, stride: usize) -> Vec<u8> {
    macro_rules! by_stride {
        ($($words:literal),*) => {
            match stride / 8 {
                $($words => radix_sort_fixed::<{ $words * 8 }>(records),)*
                _ => unreachable!("packed records are 16 to 80 bytes"),
            }
        };
    }
    by_stride!(2, 3, 4, 5, 6, 7, 8, 9, 10)
}

/// A stable least-significant-digit radix sort of records of `S` bytes by
/// their first 8 bytes read as a big-endian number, 8 bits per pass,
/// skipping a pass whose digit is the same in every record.
fn radix_sort_fixed<const S: usize>(mut from: Vec<u8>) -> Vec<u8> {
    let n = from.len() / S;
    let prefix_of = |record: &[u8; S]| u64::from_be_bytes(record[..8].try_into().expect("8 bytes"));
    let mut counts = [[0usize; 256]; 8];
    for record in from.as_chunks::<S>().0 {
        let p = prefix_of(record);
        for (digit, count) in counts.iter_mut().enumerate() {
            count[(p >> (digit * 8)) as usize & 0xff] += 1;
        }
    }
    let mut to = Vec::new();
    for (digit, count) in counts.iter().enumerate() {
        if count.contains(&n) {
            continue;
        }
        if to.is_empty() {
            to = vec![0u8; from.len()];
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (slot, c) in next.iter_mut().zip(count) {
            *slot = sum;
            sum += c;
        }
        let shift = digit * 8;
        let out = to.as_chunks_mut::<S>().0;
        for record in from.as_chunks::<S>().0 {
            let bucket = (prefix_of(record) >> shift) as usize & 0xff;
            out[next[bucket]] = *record;
            next[bucket] += 1;
        }
        std::mem::swap(&mut from, &mut to);
    }
    from
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
