//! The `.BTF` section of a BPF object file (64-bit little-endian ELF, as
//! `clang -target bpf` writes it on x86 and arm64 hosts), found with the
//! `object` crate's ELF reader.

use object::read::elf::ElfFile64;
use object::{LittleEndian, Object, ObjectSection};

use super::error::BtfError;
use super::parse::Btf;

/// The bytes of section `name`, if the object has it. The ELF structure
/// (headers, section table, names, bounds) is read by the `object` crate.
pub(crate) fn section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, BtfError> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(BtfError::NotElf);
    }
    let file = ElfFile64::<LittleEndian>::parse(elf).map_err(|error| BtfError::BadElf {
        reason: error.to_string(),
    })?;
    let Some(section) = file.section_by_name(name) else {
        return Ok(None);
    };
    section.data().map(Some).map_err(|error| BtfError::BadElf {
        reason: format!("section {name}: {error}"),
    })
}

impl Btf {
    /// The BTF of a BPF object file (its `.BTF` section): the types its maps
    /// are created with, before loading.
    ///
    /// ```
    /// let btf = mapsync_btf::Btf::from_elf(mapsync_ebpf::TYPED_OBJECT).expect("BTF");
    /// assert!(btf.find("typed_flow_key").is_some());
    /// ```
    pub fn from_elf(object: &[u8]) -> Result<Self, BtfError> {
        Btf::parse(section(object, ".BTF")?.ok_or(BtfError::NoBtfSection)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_without_btf_and_non_elf_bytes_are_refused() {
        assert_eq!(Btf::from_elf(b"not an object"), Err(BtfError::NotElf));
        // a valid header with no sections
        let mut header = b"\x7fELF\x02\x01\x01".to_vec();
        header.resize(64, 0);
        header[0x34] = 64; // e_ehsize
        assert_eq!(Btf::from_elf(&header), Err(BtfError::NoBtfSection));
        header[0x28] = 0xff; // section headers past the end
        header[0x3a] = 64; // e_shentsize
        header[0x3c] = 1;
        assert!(matches!(
            Btf::from_elf(&header),
            Err(BtfError::BadElf { .. })
        ));
        let object = mapsync_ebpf::TYPED_OBJECT;
        assert_eq!(section(object, ".no-such-section"), Ok(None));
        assert!(section(object, ".BTF").expect("parses").is_some());
    }
}
