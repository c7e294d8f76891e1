//! Decoding change records from the ring.
//!
//! The ring's memory is handed back to producers as soon as a record is
//! read, so a record's key and value are copied out. [`Record::parse`]
//! copies each into a buffer of its own; the ingest loop uses
//! [`Record::parse_in`], which copies the keys and values of many records
//! into one shared chunk ([`RecordArena`]) and hands out reference-counted
//! slices of it: one allocation per chunk instead of two per record.

use bytes::{Bytes, BytesMut};
use mapsync_ebpf::abi::{RecordHeader, RecordOp, RecordSource};

/// One decoded change record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The fixed header.
    pub header: RecordHeader,
    /// What happened.
    pub op: RecordOp,
    /// Who produced it.
    pub source: RecordSource,
    /// Key bytes.
    pub key: Bytes,
    /// Value bytes (empty unless a put).
    pub value: Bytes,
}

/// Why a ring item could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// Shorter than its header says.
    Truncated,
    /// Unknown op or source byte.
    UnknownKind,
}

/// Bytes of one arena chunk: ~680 records of an 8-byte key and a 16-byte
/// value. Small enough that a few slices kept alive (the change log's
/// events) pin little, large enough that its allocation is shared by
/// hundreds of records.
pub const ARENA_CHUNK_BYTES: usize = 16 * 1024;

/// Where [`Record::parse_in`] copies keys and values: a chunk of
/// [`ARENA_CHUNK_BYTES`] filled front to back; each key or value is split
/// off it as a `Bytes` sharing the chunk's allocation (a reference count, no
/// allocation). A full chunk is left to its slices, freed when the last one
/// is dropped, and a new one is started.
///
/// Only puts go into the chunk. A delete's key may be kept for long as a
/// tombstone by the mirror, where it would pin a whole chunk: it gets a
/// buffer of its own (as do records of other ops).
#[derive(Debug, Default)]
pub struct RecordArena {
    chunk: BytesMut,
    chunks: u64,
}

impl RecordArena {
    /// Copies `bytes` into the current chunk (a new one if it has no room)
    /// and returns them as a slice of it.
    fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if bytes.is_empty() {
            return Bytes::new();
        }
        if self.chunk.capacity() - self.chunk.len() < bytes.len() {
            self.chunk = BytesMut::with_capacity(ARENA_CHUNK_BYTES.max(bytes.len()));
            self.chunks += 1;
        }
        self.chunk.extend_from_slice(bytes);
        self.chunk.split_to(bytes.len()).freeze()
    }

    /// Chunks started so far (each one allocation, plus the shared header
    /// its first slice makes).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }
}

/// A record's header, op and source, and where its key and value lie.
fn parse_parts(
    bytes: &[u8],
) -> Result<(RecordHeader, RecordOp, RecordSource, usize, usize), BadRecord> {
    let header = RecordHeader::parse(bytes).ok_or(BadRecord::Truncated)?;
    let op = RecordOp::from_u8(header.op).ok_or(BadRecord::UnknownKind)?;
    let source = RecordSource::from_u8(header.source).ok_or(BadRecord::UnknownKind)?;
    let key_end = RecordHeader::SIZE + usize::from(header.key_size);
    let value_end = key_end + usize::from(header.value_size);
    if bytes.len() < value_end {
        return Err(BadRecord::Truncated);
    }
    Ok((header, op, source, key_end, value_end))
}

impl Record {
    /// Decodes one ring item, copying its key and value into buffers of
    /// their own.
    pub fn parse(bytes: &[u8]) -> Result<Self, BadRecord> {
        let (header, op, source, key_end, value_end) = parse_parts(bytes)?;
        Ok(Self {
            header,
            op,
            source,
            key: Bytes::copy_from_slice(&bytes[RecordHeader::SIZE..key_end]),
            value: Bytes::copy_from_slice(&bytes[key_end..value_end]),
        })
    }

    /// Decodes one ring item like [`Record::parse`], copying a put's key and
    /// value into `arena`'s shared chunk (see [`RecordArena`]).
    pub fn parse_in(bytes: &[u8], arena: &mut RecordArena) -> Result<Self, BadRecord> {
        let (header, op, source, key_end, value_end) = parse_parts(bytes)?;
        let key = &bytes[RecordHeader::SIZE..key_end];
        let value = &bytes[key_end..value_end];
        let (key, value) = if op == RecordOp::Put {
            (arena.copy(key), arena.copy(value))
        } else {
            (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value))
        };
        Ok(Self {
            header,
            op,
            source,
            key,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(op: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; RecordHeader::SIZE];
        bytes[16..20].copy_from_slice(&5u32.to_ne_bytes());
        bytes[24..26].copy_from_slice(&(key.len() as u16).to_ne_bytes());
        bytes[26..28].copy_from_slice(&(value.len() as u16).to_ne_bytes());
        bytes[28] = op;
        bytes[29] = RecordSource::Emit as u8;
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        bytes
    }

    #[test]
    fn decodes_key_and_value_after_the_header() {
        let record = Record::parse(&raw(1, b"key!", b"value")).expect("valid");
        assert_eq!(record.header.map_id, 5);
        assert_eq!(record.op, RecordOp::Put);
        assert_eq!(&record.key[..], b"key!");
        assert_eq!(&record.value[..], b"value");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let mut short = raw(1, b"key!", b"value");
        short.pop();
        assert_eq!(Record::parse(&short), Err(BadRecord::Truncated));
        assert_eq!(
            Record::parse(&raw(9, b"k", b"")),
            Err(BadRecord::UnknownKind)
        );
        assert_eq!(Record::parse(&[0u8; 8]), Err(BadRecord::Truncated));
    }

    #[test]
    fn the_arena_decodes_as_parse_does() {
        let mut arena = RecordArena::default();
        for (op, key, value) in [
            (1, &b"key!"[..], &b"value"[..]),
            (2, b"gone", b""),
            (1, b"", b""),
        ] {
            let bytes = raw(op, key, value);
            assert_eq!(Record::parse_in(&bytes, &mut arena), Record::parse(&bytes));
        }
        let mut short = raw(1, b"key!", b"value");
        short.pop();
        assert_eq!(
            Record::parse_in(&short, &mut arena),
            Err(BadRecord::Truncated)
        );
    }

    #[test]
    fn keys_and_values_stay_intact_while_the_arena_moves_on() {
        // enough puts to fill several chunks; every record keeps its own
        // bytes after later records were copied behind it and after the
        // chunks they share were left behind
        let mut arena = RecordArena::default();
        let records: Vec<Record> = (0..5_000u32)
            .map(|i| {
                let key = i.to_ne_bytes();
                let value = [i as u8; 16];
                Record::parse_in(&raw(1, &key, &value), &mut arena).expect("valid")
            })
            .collect();
        assert!(arena.chunks() >= 5, "{} chunks", arena.chunks());
        assert!(
            arena.chunks() <= 5_000 * 24 / ARENA_CHUNK_BYTES as u64 + 1,
            "one chunk per {} bytes",
            ARENA_CHUNK_BYTES
        );
        for (i, record) in records.iter().enumerate() {
            assert_eq!(&record.key[..], &(i as u32).to_ne_bytes());
            assert_eq!(&record.value[..], &[i as u8; 16]);
        }
        // a value larger than a chunk gets a chunk of its size
        let big = vec![7u8; ARENA_CHUNK_BYTES + 100];
        let record = Record::parse_in(&raw(1, b"big!", &big), &mut arena).expect("valid");
        assert_eq!(&record.value[..], &big[..]);
        assert_eq!(&records[4_999].value[..], &[(4_999u32) as u8; 16]);
    }

    #[test]
    fn puts_share_a_chunk_and_a_delete_key_does_not() {
        let mut arena = RecordArena::default();
        let first = Record::parse_in(&raw(1, b"k1", b"v1"), &mut arena).expect("valid");
        let second = Record::parse_in(&raw(1, b"k2", b"v2"), &mut arena).expect("valid");
        let delete = Record::parse_in(&raw(2, b"k3", b""), &mut arena).expect("valid");
        // the puts' bytes lie back to back in one chunk
        let chunk = first.key.as_ptr_range().start;
        assert_eq!(first.value.as_ptr(), first.key.as_ptr_range().end);
        assert_eq!(second.key.as_ptr(), first.value.as_ptr_range().end);
        assert_eq!(arena.chunks(), 1);
        // the delete's key (a tombstone to be) is a buffer of its own
        let within = chunk as usize..chunk as usize + ARENA_CHUNK_BYTES;
        assert!(!within.contains(&(delete.key.as_ptr() as usize)));
        drop((first, second));
        assert_eq!(&delete.key[..], b"k3");
    }
}
