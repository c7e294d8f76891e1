//! Errors of BTF parsing and decoding.

/// What can go wrong reading BTF or decoding bytes with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// The blob is shorter than a header, a section or a type record says.
    #[error("BTF is truncated: {what} needs {need} bytes at offset {offset}, the blob has {len}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes in the blob.
        len: usize,
    },
    /// Not BTF: the magic number is wrong (or the byte order is foreign).
    #[error("not BTF: magic {magic:#06x}, expected 0xeb9f")]
    BadMagic {
        /// The magic found.
        magic: u16,
    },
    /// A BTF version this parser does not know.
    #[error("unsupported BTF version {version}")]
    Version {
        /// The version found.
        version: u8,
    },
    /// A type record of a kind this parser does not know.
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind {
        /// Type id.
        id: u32,
        /// Raw kind.
        kind: u32,
    },
    /// A type id past the last type (split BTF is not supported).
    #[error("BTF type id {id} does not exist (the blob has {count} types)")]
    NoSuchType {
        /// The id asked for.
        id: u32,
        /// Types in the blob, void included.
        count: u32,
    },
    /// A name offset outside the string section.
    #[error("BTF string offset {offset} is outside the string section")]
    BadString {
        /// The offset.
        offset: u32,
    },
    /// Type references nest deeper than any sane type (or loop).
    #[error("BTF type {id} nests too deeply (or refers to itself)")]
    TooDeep {
        /// The type where decoding gave up.
        id: u32,
    },
    /// Decoding would build more values than the bytes can hold (members
    /// that overlap without end, arrays of zero-size elements).
    #[error(
        "BTF type {id} decodes to more than {limit} values: its members overlap or take no space"
    )]
    TooLarge {
        /// The type where decoding gave up.
        id: u32,
        /// The values allowed for the bytes decoded.
        limit: usize,
    },
    /// A type no compiler writes and the kernel would refuse.
    #[error("BTF type {id} is malformed: {what}")]
    Malformed {
        /// Type id.
        id: u32,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A type with no size (void, function, forward declaration) where data is.
    #[error("BTF type {id} ({kind}) has no size and cannot hold data")]
    Unsized {
        /// Type id.
        id: u32,
        /// Its kind.
        kind: &'static str,
    },
    /// The BTF type's size differs from the map's key or value size.
    #[error("the map's {what} is {map_size} bytes but its BTF type {type_name} is {btf_size}")]
    SizeMismatch {
        /// "key" or "value".
        what: &'static str,
        /// The type's name, as C would spell it.
        type_name: String,
        /// Size from BTF.
        btf_size: u32,
        /// Size from the map.
        map_size: u32,
    },
    /// Not a 64-bit little-endian ELF object.
    #[error("not a 64-bit little-endian ELF object")]
    NotElf,
    /// An ELF object whose structure is broken (section table or data out of
    /// bounds, bad header fields).
    #[error("malformed ELF object: {reason}")]
    BadElf {
        /// What the ELF reader found wrong.
        reason: String,
    },
    /// The object has no `.BTF` section (compiled without `-g`?).
    #[error("the object has no .BTF section (compile it with clang -g)")]
    NoBtfSection,
    /// Bytes to decode are fewer than the type needs.
    #[error("{have} bytes cannot hold BTF type {id}, which needs {need}")]
    ShortData {
        /// Type id.
        id: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
}
