//! The positions and record lengths a kernel-written ring can have: pure
//! functions, so that every rule is unit-tested.

use std::time::Duration;

/// `BPF_RINGBUF_BUSY_BIT`: the record is reserved but not yet committed.
pub(super) const BUSY_BIT: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`: the record was discarded; skip it.
pub(super) const DISCARD_BIT: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`.
pub(super) const HEADER_BYTES: u64 = 8;
/// How long the record at the consumer position may stay busy before it
/// counts as impossible (a committed-never record: a position inside a
/// record). A BPF program holds a reservation for microseconds.
pub const BUSY_STALL: Duration = Duration::from_secs(2);

/// Something about the ring's positions or a record that a kernel-written
/// ring cannot show: the consumer position is then moved to the producer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingFault {
    /// The consumer is past the producer.
    #[error("consumer position {consumer} is ahead of the producer position {producer}")]
    ConsumerAhead {
        /// Consumer position.
        consumer: u64,
        /// Producer position.
        producer: u64,
    },
    /// The consumer position is not a multiple of 8.
    #[error("consumer position {consumer} is not 8-byte aligned")]
    Misaligned {
        /// Consumer position.
        consumer: u64,
    },
    /// More unread bytes than the ring holds.
    #[error(
        "{unread} unread bytes between consumer {consumer} and producer {producer}, more than the {size}-byte ring"
    )]
    TooFarBehind {
        /// Consumer position.
        consumer: u64,
        /// Producer position.
        producer: u64,
        /// Bytes between them.
        unread: u64,
        /// Ring size.
        size: u64,
    },
    /// A record's length runs past the producer position.
    #[error("record at {consumer} of {len} bytes runs past the {unread} unread bytes")]
    RecordTooLong {
        /// Consumer position.
        consumer: u64,
        /// The record's length (without header).
        len: u32,
        /// Bytes between consumer and producer.
        unread: u64,
    },
    /// The record at the consumer position stayed reserved too long.
    #[error("record at {consumer} stayed reserved for more than {:?}", BUSY_STALL)]
    StuckBusy {
        /// Consumer position.
        consumer: u64,
    },
    /// Too many records in a row could not be decoded.
    #[error("{run} undecodable records in a row")]
    Undecodable {
        /// How many in a row.
        run: u32,
    },
}

/// What the record at a valid consumer position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStep {
    /// Reserved, not committed yet: nothing to read now.
    Busy,
    /// Discarded by its producer: skip to `next`.
    Discarded {
        /// Consumer position after it.
        next: u64,
    },
    /// A committed record of `len` bytes after the header; `next` follows it.
    Sample {
        /// Its length without the header.
        len: u32,
        /// Consumer position after it.
        next: u64,
    },
}

/// Checks a consumer and a producer position against a ring of `size`
/// bytes; returns the unread bytes between them.
pub fn check_positions(consumer: u64, producer: u64, size: u64) -> Result<u64, RingFault> {
    if consumer > producer {
        return Err(RingFault::ConsumerAhead { consumer, producer });
    }
    if !consumer.is_multiple_of(8) {
        return Err(RingFault::Misaligned { consumer });
    }
    let unread = producer - consumer;
    if unread > size {
        return Err(RingFault::TooFarBehind {
            consumer,
            producer,
            unread,
            size,
        });
    }
    Ok(unread)
}

/// Checks the record whose header's length word is `len_word`, at
/// `consumer`, against the positions and the ring size; says what to do with
/// it. Call only when `consumer < producer`.
pub fn check_record(
    consumer: u64,
    producer: u64,
    size: u64,
    len_word: u32,
) -> Result<RecordStep, RingFault> {
    let unread = check_positions(consumer, producer, size)?;
    if len_word & BUSY_BIT != 0 {
        return Ok(RecordStep::Busy);
    }
    let len = len_word & !(BUSY_BIT | DISCARD_BIT);
    let total = (u64::from(len) + HEADER_BYTES).next_multiple_of(8);
    if total > unread {
        return Err(RingFault::RecordTooLong {
            consumer,
            len,
            unread,
        });
    }
    let next = consumer + total;
    Ok(if len_word & DISCARD_BIT != 0 {
        RecordStep::Discarded { next }
    } else {
        RecordStep::Sample { len, next }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 4096;

    #[test]
    fn positions_a_kernel_ring_can_have_pass() {
        assert_eq!(check_positions(0, 0, SIZE), Ok(0));
        assert_eq!(check_positions(64, 128, SIZE), Ok(64));
        // a full ring, and positions far past the first wrap
        assert_eq!(check_positions(8, 8 + SIZE, SIZE), Ok(SIZE));
        let far = 1 << 40;
        assert_eq!(check_positions(far, far + 40, SIZE), Ok(40));
    }

    #[test]
    fn impossible_positions_are_faults() {
        assert_eq!(
            check_positions(136, 128, SIZE),
            Err(RingFault::ConsumerAhead {
                consumer: 136,
                producer: 128
            })
        );
        assert_eq!(
            check_positions(124, 128, SIZE),
            Err(RingFault::Misaligned { consumer: 124 })
        );
        assert_eq!(
            check_positions(0, SIZE + 8, SIZE),
            Err(RingFault::TooFarBehind {
                consumer: 0,
                producer: SIZE + 8,
                unread: SIZE + 8,
                size: SIZE
            })
        );
        // a ring read with the wrong (smaller) size: 4 MiB of unread data
        assert!(matches!(
            check_positions(0, 4 << 20, SIZE),
            Err(RingFault::TooFarBehind { .. })
        ));
    }

    #[test]
    fn records_are_sized_with_header_and_padding() {
        assert_eq!(
            check_record(0, 48, SIZE, 33),
            Ok(RecordStep::Sample { len: 33, next: 48 })
        );
        assert_eq!(
            check_record(0, 48, SIZE, 40),
            Ok(RecordStep::Sample { len: 40, next: 48 })
        );
        assert_eq!(
            check_record(16, 48, SIZE, 0),
            Ok(RecordStep::Sample { len: 0, next: 24 })
        );
        assert_eq!(
            check_record(0, 48, SIZE, 32 | DISCARD_BIT),
            Ok(RecordStep::Discarded { next: 40 })
        );
        // busy, whatever length it claims so far
        assert_eq!(
            check_record(0, 48, SIZE, BUSY_BIT | 4000),
            Ok(RecordStep::Busy)
        );
    }

    #[test]
    fn a_record_past_the_producer_is_a_fault() {
        assert_eq!(
            check_record(0, 48, SIZE, 41),
            Err(RingFault::RecordTooLong {
                consumer: 0,
                len: 41,
                unread: 48
            })
        );
        // the length word of garbage: far past any ring
        assert!(matches!(
            check_record(8, 16, SIZE, 0x3fff_ffff),
            Err(RingFault::RecordTooLong { .. })
        ));
        // position faults come first
        assert_eq!(
            check_record(20, 48, SIZE, 8),
            Err(RingFault::Misaligned { consumer: 20 })
        );
    }
}
