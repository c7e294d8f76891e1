//! Decoded keys and values: the shape of bpftool's pretty output, as data.
//! Rendering them as text (JSON) is the edge's job: `mapsync_grpc::json`.

/// A key or value decoded with its BTF type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    /// An integer of up to 64 bits, a bitfield, or an enum value with no
    /// enumerator; pointers are shown as their address.
    Int(i128),
    /// An integer wider than 64 bits, as `0x...` hex (bpftool's form).
    BigInt(String),
    /// A `_Bool`.
    Bool(bool),
    /// A float or double.
    Float(f64),
    /// A char array that holds a NUL-terminated printable string, an enum's
    /// enumerator, or a `BTF_INT_CHAR` character.
    String(String),
    /// An array's elements.
    Array(Vec<TypedValue>),
    /// A struct's or union's members by name, in declaration order (members
    /// of anonymous inner structs and unions are lifted into their parent,
    /// as C reads them).
    Struct(Vec<(String, TypedValue)>),
    /// A per-CPU value: one decoded value per possible CPU, CPU 0 first.
    PerCpu(Vec<TypedValue>),
}
