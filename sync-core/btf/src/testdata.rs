//! BTF for unit tests: the `.BTF` section of mapsync's typed object, as
//! clang wrote it (the same types the kernel holds once it is loaded).

use super::parse::Btf;
use super::value::TypedValue;

/// The raw `.BTF` bytes of `typed.bpf.o`.
pub(crate) fn object_btf_bytes() -> Vec<u8> {
    super::elf::section(mapsync_ebpf::TYPED_OBJECT, ".BTF")
        .expect("an ELF object")
        .expect("a .BTF section")
        .to_vec()
}

/// The parsed BTF of `typed.bpf.o`.
pub(crate) fn object_btf() -> Btf {
    Btf::from_elf(mapsync_ebpf::TYPED_OBJECT).expect("typed.bpf.o has BTF")
}

/// A struct value from its members, for expected values.
pub(crate) fn fields(members: &[(&str, TypedValue)]) -> TypedValue {
    TypedValue::Struct(
        members
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    )
}

/// An array of integers, for expected values.
pub(crate) fn ints(items: &[i128]) -> TypedValue {
    TypedValue::Array(items.iter().copied().map(TypedValue::Int).collect())
}
