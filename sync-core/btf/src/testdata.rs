//! BTF for unit tests: the `.BTF` section of mapsync's typed object, as
//! clang wrote it (the same types the kernel holds once it is loaded).

use super::parse::Btf;

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
