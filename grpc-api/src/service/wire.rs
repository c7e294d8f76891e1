//! What a Watch stream puts on the wire, and the codec that writes it.
//!
//! `repeated Event events` is, on the wire, a run of length-delimited fields
//! each holding one event's encoding, so an [`Outgoing::Events`] message
//! carries those fields already encoded ([`Bytes`] chunks, typically one
//! per revision, shared between every watch that sends the same events
//! with the same options, see `encoded`) and the codec
//! writes the `WatchResponse` around them by hand: byte for byte what prost
//! writes for the generated `WatchResponse` holding the decoded events (the
//! tests below compare the two). Clients decode it with the generated
//! message as before.
//!
//! The codec also keeps the per-stream buffers small: tonic's default
//! allocates 8 KiB up front for each stream's encoder (and as much for its
//! decoder), which an idle watch stream holds for good; here they start at
//! [`ENCODE_BUFFER`] and [`DECODE_BUFFER`] bytes and grow with the messages.

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::pb;

/// Initial bytes of a Watch stream's encode buffer (tonic's default: 8 KiB).
/// Measured (`benches/fanout.rs`, 1000 watchers catching up flat out): 1 and
/// 4 KiB deliver like 8 KiB, 512 bytes collapses to a few percent of it
/// (not understood; kept well above).
pub const ENCODE_BUFFER: usize = 4 << 10;
/// Initial bytes of a Watch stream's decode buffer: requests are small.
pub const DECODE_BUFFER: usize = 256;
/// Bytes of encoded messages the encoder gathers before handing them to the
/// transport (tonic's default).
const YIELD_THRESHOLD: usize = 32 << 10;

/// `WatchResponse` field numbers (proto/mapsync/v1/mapsync.proto).
const RESPONSE_EPOCH: u32 = 1;
const RESPONSE_WATCH_ID: u32 = 2;
const RESPONSE_EVENTS: u32 = 4;
/// `EventBatch` field numbers.
const BATCH_EVENTS: u32 = 1;
const BATCH_REVISION_CONTINUES: u32 = 2;

/// One message of a Watch stream, as the server holds it until the
/// transport takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// Any `WatchResponse`, encoded by prost.
    Message(pb::WatchResponse),
    /// A `WatchResponse` holding an `EventBatch` whose events are encoded.
    Events(EncodedBatch),
}

/// A `WatchResponse { epoch, watch_id, events: EventBatch { .. } }` whose
/// events are already encoded as `EventBatch.events` fields (key, length,
/// `Event`), in chunks of one or more whole fields.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    /// The server's epoch.
    pub epoch: u64,
    /// The watch the message is about.
    pub watch_id: u64,
    /// Whole `events` fields, in order ([`frame_event`]).
    pub fields: Vec<Bytes>,
    /// `EventBatch.revision_continues`.
    pub revision_continues: bool,
}

/// Appends `event` to `buf` as one `EventBatch.events` field.
pub fn frame_event(event: &pb::Event, buf: &mut Vec<u8>) {
    let len = event.encoded_len();
    buf.reserve(framed_len(len));
    encode_key(BATCH_EVENTS, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    event.encode_raw(buf);
}

/// The bytes of an `events` field holding an `Event` of `len` bytes.
pub fn framed_len(len: usize) -> usize {
    key_len(BATCH_EVENTS) + encoded_len_varint(len as u64) + len
}

impl EncodedBatch {
    /// The encoded length of the `EventBatch` (without its own key).
    fn batch_len(&self) -> usize {
        let events: usize = self.fields.iter().map(Bytes::len).sum();
        events + usize::from(self.revision_continues) * (key_len(BATCH_REVISION_CONTINUES) + 1)
    }

    fn encoded_len(&self) -> usize {
        let batch = self.batch_len();
        varint_field_len(RESPONSE_EPOCH, self.epoch)
            + varint_field_len(RESPONSE_WATCH_ID, self.watch_id)
            + key_len(RESPONSE_EVENTS)
            + encoded_len_varint(batch as u64)
            + batch
    }

    fn encode(&self, buf: &mut impl BufMut) {
        varint_field(RESPONSE_EPOCH, self.epoch, buf);
        varint_field(RESPONSE_WATCH_ID, self.watch_id, buf);
        encode_key(RESPONSE_EVENTS, WireType::LengthDelimited, buf);
        encode_varint(self.batch_len() as u64, buf);
        for fields in &self.fields {
            buf.put_slice(fields);
        }
        if self.revision_continues {
            encode_key(BATCH_REVISION_CONTINUES, WireType::Varint, buf);
            encode_varint(1, buf);
        }
    }

    /// The same message as the generated type (decodes the events).
    fn decoded(&self) -> Result<pb::WatchResponse, prost::DecodeError> {
        let mut batch = Vec::with_capacity(self.batch_len());
        for fields in &self.fields {
            batch.extend_from_slice(fields);
        }
        let mut batch = pb::EventBatch::decode(&batch[..])?;
        batch.revision_continues = self.revision_continues;
        Ok(pb::WatchResponse {
            epoch: self.epoch,
            watch_id: self.watch_id,
            kind: Some(pb::watch_response::Kind::Events(batch)),
        })
    }
}

/// A uint64 field as prost writes it (nothing when 0, proto3).
fn varint_field_len(tag: u32, value: u64) -> usize {
    match value {
        0 => 0,
        value => key_len(tag) + encoded_len_varint(value),
    }
}

fn varint_field(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

impl Outgoing {
    /// The message's encoded length, what the byte budget charges.
    pub fn encoded_len(&self) -> usize {
        match self {
            Outgoing::Message(message) => message.encoded_len(),
            Outgoing::Events(batch) => batch.encoded_len(),
        }
    }

    /// Writes the message's protobuf encoding.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Outgoing::Message(message) => message.encode_raw(buf),
            Outgoing::Events(batch) => batch.encode(buf),
        }
    }

    /// The same message as the generated `WatchResponse`, for callers that
    /// serve the generated service directly.
    pub fn into_message(self) -> Result<pb::WatchResponse, Status> {
        match self {
            Outgoing::Message(message) => Ok(message),
            Outgoing::Events(batch) => batch.decoded().map_err(|error| {
                Status::internal(format!("a watch event did not decode: {error}"))
            }),
        }
    }
}

/// The Watch route's codec: [`Outgoing`] out, `WatchRequest` in, with small
/// initial buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Outgoing;
    type Decode = pb::WatchRequest;
    type Encoder = OutgoingEncoder;
    type Decoder = ProstDecoder<pb::WatchRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(DECODE_BUFFER, YIELD_THRESHOLD))
    }
}

/// Writes [`Outgoing`] messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // one growth to the message's size, not one per event
        buf.reserve(item.encoded_len());
        item.encode(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::watch_response::Kind;

    fn event(revision: u64, key: u8, prev: bool) -> pb::Event {
        pb::Event {
            revision,
            map: "flows".into(),
            op: pb::Op::Put as i32,
            key: vec![key; 4].into(),
            value: vec![7; 300].into(),
            source: pb::Source::Trace as i32,
            prev_value: if prev {
                vec![1; 300].into()
            } else {
                Bytes::new()
            },
            has_prev: prev,
            ..Default::default()
        }
    }

    fn generated(epoch: u64, id: u64, events: &[pb::Event], continues: bool) -> pb::WatchResponse {
        pb::WatchResponse {
            epoch,
            watch_id: id,
            kind: Some(Kind::Events(pb::EventBatch {
                events: events.to_vec(),
                revision_continues: continues,
            })),
        }
    }

    /// The events in chunks of one, two, three... fields.
    fn encoded(epoch: u64, id: u64, events: &[pb::Event], continues: bool) -> Outgoing {
        let mut fields = Vec::new();
        let mut rest = events;
        let mut size = 1;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            let mut buf = Vec::new();
            for event in chunk {
                frame_event(event, &mut buf);
            }
            fields.push(Bytes::from(buf));
            rest = after;
            size += 1;
        }
        Outgoing::Events(EncodedBatch {
            epoch,
            watch_id: id,
            fields,
            revision_continues: continues,
        })
    }

    fn bytes_of(outgoing: &Outgoing) -> Vec<u8> {
        let mut buf = Vec::new();
        outgoing.encode(&mut buf);
        buf
    }

    #[test]
    fn shared_bytes_are_the_generated_message_on_the_wire() {
        let events: Vec<_> = (0..40)
            .map(|k| event(9 + u64::from(k / 3), k, k % 2 == 0))
            .collect();
        for (epoch, id, continues, events) in [
            (7, 3, false, &events[..]),
            (7, 3, true, &events[..]),
            (0, 0, false, &events[..1]),
            (u64::MAX, 1 << 40, true, &events[..]),
            (1, 1, false, &[][..]),
        ] {
            let want = generated(epoch, id, events, continues);
            let got = encoded(epoch, id, events, continues);
            assert_eq!(bytes_of(&got), want.encode_to_vec(), "byte for byte");
            assert_eq!(got.encoded_len(), want.encoded_len());
            // what a client's generated type reads
            let decoded = pb::WatchResponse::decode(&bytes_of(&got)[..]).expect("decodes");
            assert_eq!(decoded, want);
            assert_eq!(got.into_message().expect("decodes"), want);
        }
    }

    #[test]
    fn other_messages_are_prost_s_encoding() {
        let message = pb::WatchResponse {
            epoch: 5,
            watch_id: 2,
            kind: Some(Kind::Progress(pb::WatchProgress { revision: 77 })),
        };
        let outgoing = Outgoing::Message(message.clone());
        assert_eq!(bytes_of(&outgoing), message.encode_to_vec());
        assert_eq!(outgoing.encoded_len(), message.encoded_len());
    }
}
