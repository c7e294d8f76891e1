//! BTF for unit tests: the `.BTF` section of mapsync's typed demo object, as
//! clang wrote it (the same types the kernel holds once the object is loaded).

use super::parse::Btf;

/// Finds the section `name` in a 64-bit little-endian ELF object.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |i: usize| u16::from_le_bytes(elf[i..i + 2].try_into().expect("2 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(elf[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(elf[i..i + 8].try_into().expect("8 bytes"));
    let shoff = u64_at(0x28) as usize;
    let shentsize = u16_at(0x3a) as usize;
    let shnum = u16_at(0x3c) as usize;
    let shstrndx = u16_at(0x3e) as usize;
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18) as usize;
    (0..shnum).find_map(|i| {
        let h = header(i);
        let name_at = names + u32_at(h) as usize;
        let end = elf[name_at..].iter().position(|b| *b == 0)?;
        (&elf[name_at..name_at + end] == name.as_bytes()).then(|| {
            let offset = u64_at(h + 0x18) as usize;
            let size = u64_at(h + 0x20) as usize;
            &elf[offset..offset + size]
        })
    })
}

/// The raw `.BTF` bytes of `typed.bpf.o`.
pub(crate) fn object_btf_bytes() -> Vec<u8> {
    elf_section(mapsync_ebpf::TYPED_OBJECT, ".BTF")
        .expect("typed.bpf.o has a .BTF section")
        .to_vec()
}

/// The parsed BTF of `typed.bpf.o`.
pub(crate) fn object_btf() -> Btf {
    Btf::parse(&object_btf_bytes()).expect("clang's BTF parses")
}
