//! Decoding change records from the ring.

use bytes::Bytes;
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

impl Record {
    /// Decodes one ring item.
    pub fn parse(bytes: &[u8]) -> Result<Self, BadRecord> {
        let header = RecordHeader::parse(bytes).ok_or(BadRecord::Truncated)?;
        let op = RecordOp::from_u8(header.op).ok_or(BadRecord::UnknownKind)?;
        let source = RecordSource::from_u8(header.source).ok_or(BadRecord::UnknownKind)?;
        let key_end = RecordHeader::SIZE + usize::from(header.key_size);
        let value_end = key_end + usize::from(header.value_size);
        if bytes.len() < value_end {
            return Err(BadRecord::Truncated);
        }
        Ok(Self {
            header,
            op,
            source,
            key: Bytes::copy_from_slice(&bytes[RecordHeader::SIZE..key_end]),
            value: Bytes::copy_from_slice(&bytes[key_end..value_end]),
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
}
