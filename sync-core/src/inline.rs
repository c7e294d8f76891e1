//! Small byte strings stored inline, cheap to clone: the overlay's keys and
//! values.
//!
//! A persistent map copies a whole node (32 entries) whenever one of its
//! entries changes after a publish, so what an entry's clone costs is what
//! a put costs. An [`InlineBytes`] of up to [`INLINE_BYTES`] bytes clones as
//! one plain copy (no allocation, no reference count, no per-byte loop);
//! longer ones are shared behind an `Arc`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Longest byte string held inline.
pub const INLINE_BYTES: usize = 30;

/// A byte string, inline up to [`INLINE_BYTES`] bytes.
#[derive(Clone)]
pub(crate) enum InlineBytes {
    /// Length, then the bytes (the rest zero).
    Inline(u8, [u8; INLINE_BYTES]),
    /// A longer string, shared.
    Shared(Arc<[u8]>),
}

impl InlineBytes {
    /// A copy of `bytes`.
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_BYTES {
            let mut inline = [0u8; INLINE_BYTES];
            inline[..bytes.len()].copy_from_slice(bytes);
            Self::Inline(bytes.len() as u8, inline)
        } else {
            Self::Shared(bytes.into())
        }
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Shared(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for InlineBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl Borrow<[u8]> for InlineBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for InlineBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for InlineBytes {}

impl PartialOrd for InlineBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InlineBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for InlineBytes {
    // as `[u8]` hashes, so that lookups by `&[u8]` find it
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_strings_keep_their_bytes_order_and_hash() {
        let short = InlineBytes::from_slice(b"abc");
        let long = InlineBytes::from_slice(&[0xffu8; INLINE_BYTES + 1]);
        let empty = InlineBytes::from_slice(b"");
        assert!(matches!(short, InlineBytes::Inline(3, _)));
        assert!(matches!(long, InlineBytes::Shared(_)));
        assert_eq!(short.clone().as_slice(), b"abc");
        assert_eq!(long.clone().as_slice(), &[0xffu8; INLINE_BYTES + 1][..]);
        assert!(empty < short && short < long);
        let hash = |value: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            value(&mut hasher);
            hasher.finish()
        };
        assert_eq!(
            hash(&|h| short.hash(h)),
            hash(&|h| b"abc"[..].hash(h)),
            "hashes as the slice it borrows as"
        );
    }
}
