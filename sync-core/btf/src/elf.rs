//! The `.BTF` section of a BPF object file (64-bit little-endian ELF, as
//! `clang -target bpf` writes it on x86 and arm64 hosts).

use super::error::BtfError;
use super::parse::Btf;

fn bytes<const N: usize>(elf: &[u8], at: usize) -> Result<[u8; N], BtfError> {
    elf.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(BtfError::Truncated {
            what: "the ELF object",
            offset: at,
            need: N,
            len: elf.len(),
        })
}

fn u16_at(elf: &[u8], at: usize) -> Result<usize, BtfError> {
    Ok(u16::from_le_bytes(bytes(elf, at)?) as usize)
}

fn u32_at(elf: &[u8], at: usize) -> Result<usize, BtfError> {
    Ok(u32::from_le_bytes(bytes(elf, at)?) as usize)
}

fn u64_at(elf: &[u8], at: usize) -> Result<usize, BtfError> {
    Ok(u64::from_le_bytes(bytes(elf, at)?) as usize)
}

/// The bytes of section `name`, if the object has it.
pub(crate) fn section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, BtfError> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(BtfError::NotElf);
    }
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = u16_at(elf, 0x3a)?;
    let shnum = u16_at(elf, 0x3c)?;
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(elf, header(u16_at(elf, 0x3e)?) + 0x18)?;
    for i in 0..shnum {
        let at = names + u32_at(elf, header(i))?;
        let found = elf
            .get(at..)
            .and_then(|rest| rest.split(|b| *b == 0).next())
            .is_some_and(|n| n == name.as_bytes());
        if found {
            let offset = u64_at(elf, header(i) + 0x18)?;
            let size = u64_at(elf, header(i) + 0x20)?;
            return elf
                .get(offset..offset + size)
                .map(Some)
                .ok_or(BtfError::Truncated {
                    what: "an ELF section",
                    offset,
                    need: size,
                    len: elf.len(),
                });
        }
    }
    Ok(None)
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
        let mut header = b"\x7fELF\x02\x01".to_vec();
        header.resize(64, 0);
        assert_eq!(Btf::from_elf(&header), Err(BtfError::NoBtfSection));
        header[0x28] = 0xff; // section headers past the end
        header[0x3c] = 1;
        assert!(matches!(
            Btf::from_elf(&header),
            Err(BtfError::Truncated { .. })
        ));
        let object = mapsync_ebpf::TYPED_OBJECT;
        assert_eq!(section(object, ".no-such-section"), Ok(None));
        assert!(section(object, ".BTF").expect("parses").is_some());
    }
}
