//! The BTF types decoding cares about, as [`Btf`](super::Btf) holds them.

/// An integer's encoding (`BTF_INT_*`) and bit layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntType {
    /// Storage size in bytes.
    pub size: u32,
    /// `BTF_INT_SIGNED`.
    pub signed: bool,
    /// `BTF_INT_CHAR`.
    pub char: bool,
    /// `BTF_INT_BOOL`.
    pub bool: bool,
    /// Bit offset of the value inside its storage.
    pub bit_offset: u32,
    /// Bits of the value.
    pub bits: u32,
}

/// A member of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name; empty for anonymous members.
    pub name: String,
    /// Its type.
    pub type_id: u32,
    /// Offset from the start of the aggregate, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits (0: not a bitfield).
    pub bitfield_bits: u32,
}

/// One BTF type, as far as decoding cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// `void` (id 0).
    Void,
    /// `BTF_KIND_INT`.
    Int(IntType),
    /// `BTF_KIND_PTR`: pointer-sized, shown as an address.
    Ptr,
    /// `BTF_KIND_ARRAY`.
    Array {
        /// Element type.
        elem: u32,
        /// Number of elements.
        len: u32,
    },
    /// `BTF_KIND_STRUCT` or `BTF_KIND_UNION`.
    Aggregate {
        /// Whether it is a union.
        union: bool,
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// `BTF_KIND_ENUM` or `BTF_KIND_ENUM64`.
    Enum {
        /// Size in bytes.
        size: u32,
        /// Whether values are signed.
        signed: bool,
        /// Enumerators: name and value.
        values: Vec<(String, i128)>,
    },
    /// Typedefs and qualifiers (`const`, `volatile`, `restrict`, type tags),
    /// which decode as the type they refer to.
    Alias(u32),
    /// `BTF_KIND_FLOAT`.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// Kinds that never describe map data: forward declarations, functions,
    /// variables, data sections, declaration tags.
    Other(&'static str),
}

/// A type: its name (empty if anonymous) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfType {
    /// Name, empty for anonymous types.
    pub name: String,
    /// What it is.
    pub kind: TypeKind,
}
