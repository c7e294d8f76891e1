//! The write calls: `put`, `delete`, `txn` and `apply` (streamed in chunks
//! under the server's request cap).

use mapsync_api as pb;
use prost::Message;

use crate::client::Client;
use crate::error::ClientError;
use crate::write_types::{
    Applied, ApplyEntry, ApplyMode, ApplyOptions, DeleteOptions, Previous, PutOptions, Txn,
    TxnResult, Written,
};

/// The server's default cap on one request message (64 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// What one Apply message may carry at most, encoded: the request cap less
/// room for the header fields of the first message.
pub const APPLY_CHUNK_BYTES: usize = MAX_REQUEST_BYTES - 1024;

impl Client {
    /// Writes one key (create or replace). The result's revision is where
    /// the write is visible: read it back with
    /// [`ReadOptions::min_revision`](crate::ReadOptions).
    pub async fn put(
        &mut self,
        map: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Written, ClientError> {
        self.put_with(map, key, value, &PutOptions::default()).await
    }

    /// Writes one key with a kernel flag, compare-and-swap, or asking for
    /// the previous value. Refusals are typed:
    /// [`ClientError::AlreadyExists`], [`ClientError::NotFound`],
    /// [`ClientError::ModRevisionMismatch`], [`ClientError::MapFull`],
    /// [`ClientError::InvalidArgument`], [`ClientError::PermissionDenied`],
    /// [`ClientError::UnknownMap`]; nothing is written then.
    pub async fn put_with(
        &mut self,
        map: &str,
        key: &[u8],
        value: &[u8],
        options: &PutOptions,
    ) -> Result<Written, ClientError> {
        let mut request = tonic::Request::new(pb::PutRequest {
            map: map.to_owned(),
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            mode: options.mode.to_pb() as i32,
            expect_mod_revision: options.expect_mod_revision,
            epoch: options.epoch,
            prev_value: options.prev_value,
        });
        if let Some(timeout) = options.timeout {
            request.set_timeout(timeout);
        }
        let reply = self
            .inner
            .put(request)
            .await
            .map_err(ClientError::from_write_status)?
            .into_inner();
        Ok(Written::from_reply(
            reply.header,
            reply.prev,
            options.prev_value,
        ))
    }

    /// Removes one key (absent: [`ClientError::NotFound`]).
    pub async fn delete(&mut self, map: &str, key: &[u8]) -> Result<Written, ClientError> {
        self.delete_with(map, key, &DeleteOptions::default()).await
    }

    /// Removes one key, optionally compare-and-swap or asking for the
    /// previous value.
    pub async fn delete_with(
        &mut self,
        map: &str,
        key: &[u8],
        options: &DeleteOptions,
    ) -> Result<Written, ClientError> {
        let mut request = tonic::Request::new(pb::DeleteRequest {
            map: map.to_owned(),
            key: key.to_vec().into(),
            expect_mod_revision: options.expect_mod_revision,
            epoch: options.epoch,
            prev_value: options.prev_value,
        });
        if let Some(timeout) = options.timeout {
            request.set_timeout(timeout);
        }
        let reply = self
            .inner
            .delete(request)
            .await
            .map_err(ClientError::from_write_status)?
            .into_inner();
        Ok(Written::from_reply(
            reply.header,
            reply.prev,
            options.prev_value,
        ))
    }

    /// Runs a transaction. A failed compare is no error
    /// ([`TxnResult::succeeded`] is `false`); a kernel refusal is, with
    /// [`ClientError::failed_op`] naming the op (the ops before it were
    /// undone).
    pub async fn txn(&mut self, txn: Txn) -> Result<TxnResult, ClientError> {
        let timeout = txn.timeout;
        let mut request = tonic::Request::new(pb::TxnRequest {
            compare: txn.compares.into_iter().map(|c| c.into_pb()).collect(),
            success: txn.success.into_iter().map(|o| o.into_pb()).collect(),
            failure: txn.failure.into_iter().map(|o| o.into_pb()).collect(),
            epoch: txn.epoch,
            prev_value: txn.prev_value,
        });
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let reply = self
            .inner
            .txn(request)
            .await
            .map_err(ClientError::from_write_status)?
            .into_inner();
        let header = reply.header.unwrap_or_default();
        Ok(TxnResult {
            epoch: header.epoch,
            revision: header.revision,
            succeeded: reply.succeeded,
            prev: reply.prev.into_iter().map(Previous::from).collect(),
        })
    }

    /// Replaces (or merges into) the whole set of a switchable map in one
    /// atomic switch. The entries travel in messages under the request cap
    /// ([`APPLY_CHUNK_BYTES`]); every entry is checked to fit before
    /// anything is sent.
    pub async fn apply(
        &mut self,
        map: &str,
        entries: impl IntoIterator<Item = ApplyEntry>,
        options: &ApplyOptions,
    ) -> Result<Applied, ClientError> {
        self.apply_with_progress(map, entries, options, |_, _| {})
            .await
    }

    /// [`Client::apply`], calling `progress(sent, total)` each time a
    /// message of entries is handed to the transport.
    pub async fn apply_with_progress(
        &mut self,
        map: &str,
        entries: impl IntoIterator<Item = ApplyEntry>,
        options: &ApplyOptions,
        mut progress: impl FnMut(usize, usize) + Send + 'static,
    ) -> Result<Applied, ClientError> {
        let mut messages = apply_messages(map, entries, options)?;
        let total: usize = messages.iter().map(|m| m.entries.len()).sum();
        messages.reverse();
        let mut sent = 0;
        let stream = futures::stream::poll_fn(move |_| {
            let message = messages.pop();
            if let Some(message) = &message {
                sent += message.entries.len();
                progress(sent, total);
            }
            std::task::Poll::Ready(message)
        });
        let mut request = tonic::Request::new(stream);
        if let Some(timeout) = options.timeout {
            request.set_timeout(timeout);
        }
        let reply = self
            .inner
            .apply(request)
            .await
            .map_err(ClientError::from_write_status)?
            .into_inner();
        let header = reply.header.unwrap_or_default();
        Ok(Applied {
            epoch: header.epoch,
            revision: header.revision,
            version: reply.version,
            entries: reply.entries,
            changed: reply.changed,
            switch: std::time::Duration::from_nanos(reply.switch_ns),
        })
    }
}

/// The messages of an Apply: the first names the map, mode and expected
/// version (and carries entries too); each stays within
/// [`APPLY_CHUNK_BYTES`] encoded. An empty set is one message with none.
pub(crate) fn apply_messages(
    map: &str,
    entries: impl IntoIterator<Item = ApplyEntry>,
    options: &ApplyOptions,
) -> Result<Vec<pb::ApplyRequest>, ClientError> {
    let mode = match options.mode {
        ApplyMode::Replace => pb::ApplyMode::Replace,
        ApplyMode::Merge => pb::ApplyMode::Merge,
    };
    let first = pb::ApplyRequest {
        map: map.to_owned(),
        mode: mode as i32,
        expect_version: options.expect_version,
        entries: Vec::new(),
    };
    let mut size = first.encoded_len();
    let mut messages = vec![first];
    for entry in entries {
        let entry = entry.into_pb();
        let len = entry.encoded_len();
        // field tag + length prefix of the repeated entry
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if framed > APPLY_CHUNK_BYTES {
            return Err(ClientError::EntryTooLarge {
                bytes: framed,
                max: APPLY_CHUNK_BYTES,
            });
        }
        if size + framed > APPLY_CHUNK_BYTES {
            messages.push(pb::ApplyRequest::default());
            size = 0;
        }
        size += framed;
        messages
            .last_mut()
            .expect("at least the first message")
            .entries
            .push(entry);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_entries_are_cut_under_the_request_cap_and_keep_their_order() {
        let entries: Vec<ApplyEntry> = (0..5_000u32)
            .map(|i| ApplyEntry::put(i.to_be_bytes().to_vec(), vec![7u8; 100]))
            .chain([ApplyEntry::delete(vec![9u8; 4])])
            .collect();
        let options = ApplyOptions::new().mode(ApplyMode::Merge).expect_version(3);
        let messages = apply_messages("rules", entries.clone(), &options).expect("fits");
        assert!(messages.len() > 5, "{} messages", messages.len());
        for message in &messages {
            assert!(message.encoded_len() <= APPLY_CHUNK_BYTES);
        }
        assert_eq!(messages[0].map, "rules");
        assert_eq!(messages[0].mode, pb::ApplyMode::Merge as i32);
        assert_eq!(messages[0].expect_version, Some(3));
        assert!(messages[1..].iter().all(|m| m.map.is_empty()));
        let sent: Vec<pb::ApplyEntry> = messages.into_iter().flat_map(|m| m.entries).collect();
        let expected: Vec<pb::ApplyEntry> = entries.into_iter().map(|e| e.into_pb()).collect();
        assert_eq!(sent, expected);
        assert!(sent.last().expect("one").delete);
    }

    #[test]
    fn an_entry_larger_than_a_request_is_refused_before_sending() {
        let entries = [ApplyEntry::put(vec![0u8; 4], vec![0u8; MAX_REQUEST_BYTES])];
        let error = apply_messages("rules", entries, &ApplyOptions::new()).expect_err("too big");
        assert!(
            matches!(error, ClientError::EntryTooLarge { .. }),
            "{error}"
        );
        let empty = apply_messages("rules", [], &ApplyOptions::new()).expect("empty set");
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].expect_version, None);
    }
}
