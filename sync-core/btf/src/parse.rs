//! Reading a BTF blob (`struct btf_header`, type records, strings) into a
//! table of types indexed by id. Only what decoding data needs is kept; every
//! kind is parsed so that the records after it are found.

use super::error::BtfError;
pub use super::types::{BtfType, IntType, Member, TypeKind};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// Most type references followed from one type (typedef chains, nesting).
pub(crate) const MAX_DEPTH: usize = 32;

/// A parsed BTF blob: every type by id (id 0 is `void`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Btf {
    types: Vec<BtfType>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self, what: &'static str) -> Result<u32, BtfError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or(BtfError::Truncated {
                what,
                offset: self.pos,
                need: 4,
                len: self.data.len(),
            })?;
        self.pos += 4;
        Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
    }
}

fn section<'a>(
    data: &'a [u8],
    what: &'static str,
    offset: usize,
    len: usize,
) -> Result<&'a [u8], BtfError> {
    data.get(offset..offset.saturating_add(len))
        .ok_or(BtfError::Truncated {
            what,
            offset,
            need: len,
            len: data.len(),
        })
}

fn string(strings: &[u8], offset: u32) -> Result<String, BtfError> {
    let rest = strings
        .get(offset as usize..)
        .ok_or(BtfError::BadString { offset })?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or(BtfError::BadString { offset })?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl Btf {
    /// Parses a BTF blob in the host's byte order, as the kernel returns it.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let header = section(data, "the header", 0, HEADER_LEN)?;
        let magic = u16::from_ne_bytes([header[0], header[1]]);
        if magic != MAGIC {
            return Err(BtfError::BadMagic { magic });
        }
        if header[2] != 1 {
            return Err(BtfError::Version { version: header[2] });
        }
        let field = |i: usize| u32::from_ne_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let hdr_len = field(4) as usize;
        let types = section(
            data,
            "the type section",
            hdr_len + field(8) as usize,
            field(12) as usize,
        )?;
        let strings = section(
            data,
            "the string section",
            hdr_len + field(16) as usize,
            field(20) as usize,
        )?;
        let mut table = vec![BtfType {
            name: String::new(),
            kind: TypeKind::Void,
        }];
        let mut reader = Reader {
            data: types,
            pos: 0,
        };
        while reader.pos < types.len() {
            let id = table.len() as u32;
            table.push(read_type(&mut reader, strings, id)?);
        }
        Ok(Self { types: table })
    }

    /// The type `id`.
    pub fn get(&self, id: u32) -> Result<&BtfType, BtfError> {
        self.types.get(id as usize).ok_or(BtfError::NoSuchType {
            id,
            count: self.types.len() as u32,
        })
    }

    /// The id of the first type named `name` that is not a typedef or
    /// qualifier (a struct, union, enum or int), if any.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.name == name && !matches!(t.kind, TypeKind::Alias(_)))
            .map(|i| i as u32)
    }

    /// Follows typedefs and qualifiers to the type that says what the data is.
    pub fn resolve(&self, mut id: u32) -> Result<(u32, &BtfType), BtfError> {
        for _ in 0..MAX_DEPTH {
            let ty = self.get(id)?;
            match ty.kind {
                TypeKind::Alias(next) => id = next,
                _ => return Ok((id, ty)),
            }
        }
        Err(BtfError::TooDeep { id })
    }

    /// Size in bytes of data of type `id`.
    pub fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        self.size_at(id, 0)
    }

    fn size_at(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        let (id, ty) = self.resolve(id)?;
        Ok(match &ty.kind {
            TypeKind::Int(int) => int.size,
            TypeKind::Ptr => 8,
            TypeKind::Array { elem, len } => self.size_at(*elem, depth + 1)?.saturating_mul(*len),
            TypeKind::Aggregate { size, .. }
            | TypeKind::Enum { size, .. }
            | TypeKind::Float { size } => *size,
            TypeKind::Void => return Err(BtfError::Unsized { id, kind: "void" }),
            TypeKind::Alias(_) => unreachable!("resolved"),
            TypeKind::Other(kind) => return Err(BtfError::Unsized { id, kind }),
        })
    }

    /// The type as C spells it, for messages: `struct flow_key`, `__u32`,
    /// `char[16]`.
    pub fn type_name(&self, id: u32) -> String {
        self.type_name_at(id, 0)
    }

    fn type_name_at(&self, id: u32, depth: usize) -> String {
        let Ok(ty) = self.get(id) else {
            return format!("<type {id}>");
        };
        if depth > MAX_DEPTH {
            return format!("<type {id}: nested too deeply>");
        }
        let named = |prefix: &str| {
            if ty.name.is_empty() {
                format!("{prefix}(anonymous)")
            } else {
                format!("{prefix}{}", ty.name)
            }
        };
        match &ty.kind {
            TypeKind::Aggregate { union: false, .. } => named("struct "),
            TypeKind::Aggregate { union: true, .. } => named("union "),
            TypeKind::Enum { .. } => named("enum "),
            TypeKind::Array { elem, len } => {
                format!("{}[{len}]", self.type_name_at(*elem, depth + 1))
            }
            TypeKind::Ptr => "pointer".to_owned(),
            TypeKind::Void => "void".to_owned(),
            TypeKind::Alias(next) if ty.name.is_empty() => self.type_name_at(*next, depth + 1),
            _ => named(""),
        }
    }
}

fn read_type(reader: &mut Reader<'_>, strings: &[u8], id: u32) -> Result<BtfType, BtfError> {
    let name_off = reader.u32("a type record")?;
    let info = reader.u32("a type record")?;
    let size_or_type = reader.u32("a type record")?;
    let vlen = info & 0xffff;
    let kind = (info >> 24) & 0x1f;
    let kind_flag = info >> 31 == 1;
    let name = string(strings, name_off)?;
    let kind = match kind {
        1 => {
            let bits = reader.u32("an int's encoding")?;
            let encoding = (bits >> 24) & 0xf;
            TypeKind::Int(IntType {
                size: size_or_type,
                signed: encoding & 1 != 0,
                char: encoding & 2 != 0,
                bool: encoding & 4 != 0,
                bit_offset: (bits >> 16) & 0xff,
                bits: bits & 0xff,
            })
        }
        2 => TypeKind::Ptr,
        3 => {
            let elem = reader.u32("an array")?;
            let _index = reader.u32("an array")?;
            let len = reader.u32("an array")?;
            TypeKind::Array { elem, len }
        }
        4 | 5 => {
            let mut members = Vec::with_capacity(vlen as usize);
            for _ in 0..vlen {
                let name = string(strings, reader.u32("a member")?)?;
                let type_id = reader.u32("a member")?;
                let offset = reader.u32("a member")?;
                let (bit_offset, bitfield_bits) = if kind_flag {
                    (offset & 0xff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                members.push(Member {
                    name,
                    type_id,
                    bit_offset,
                    bitfield_bits,
                });
            }
            TypeKind::Aggregate {
                union: kind == 5,
                size: size_or_type,
                members,
            }
        }
        6 | 19 => {
            let mut values = Vec::with_capacity(vlen as usize);
            for _ in 0..vlen {
                let name = string(strings, reader.u32("an enumerator")?)?;
                let low = reader.u32("an enumerator")?;
                let value = if kind == 19 {
                    let high = reader.u32("an enumerator")?;
                    let raw = (u64::from(high) << 32) | u64::from(low);
                    if kind_flag {
                        i128::from(raw as i64)
                    } else {
                        i128::from(raw)
                    }
                } else if kind_flag {
                    i128::from(low as i32)
                } else {
                    i128::from(low)
                };
                values.push((name, value));
            }
            TypeKind::Enum {
                size: size_or_type,
                signed: kind_flag,
                values,
            }
        }
        7 => TypeKind::Other("forward declaration"),
        8..=11 | 18 => TypeKind::Alias(size_or_type),
        12 => TypeKind::Other("function"),
        13 => {
            for _ in 0..vlen * 2 {
                reader.u32("a function parameter")?;
            }
            TypeKind::Other("function prototype")
        }
        14 => {
            reader.u32("a variable")?;
            TypeKind::Other("variable")
        }
        15 => {
            for _ in 0..vlen * 3 {
                reader.u32("a data section")?;
            }
            TypeKind::Other("data section")
        }
        16 => TypeKind::Float { size: size_or_type },
        17 => {
            reader.u32("a declaration tag")?;
            TypeKind::Other("declaration tag")
        }
        other => return Err(BtfError::UnknownKind { id, kind: other }),
    };
    Ok(BtfType { name, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn the_typed_objects_types_parse_with_their_names_sizes_and_members() {
        let btf = testdata::object_btf();
        let key = btf.find("typed_flow_key").expect("struct typed_flow_key");
        assert_eq!(btf.size_of(key).expect("size"), 8);
        assert_eq!(btf.type_name(key), "struct typed_flow_key");
        let TypeKind::Aggregate { members, .. } = &btf.get(key).expect("type").kind else {
            panic!("a struct");
        };
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["addr", "port", "proto"]);
        assert_eq!(members[1].bit_offset, 32);
        let value = btf
            .find("typed_flow_value")
            .expect("struct typed_flow_value");
        assert_eq!(btf.size_of(value).expect("size"), 32);
        let shape = btf.find("typed_shape").expect("struct typed_shape");
        assert_eq!(btf.size_of(shape).expect("size"), 56);
        let verdict = btf.find("typed_verdict").expect("enum");
        let TypeKind::Enum { values, size, .. } = &btf.get(verdict).expect("type").kind else {
            panic!("an enum");
        };
        assert_eq!(*size, 4);
        assert_eq!(values[2], ("TYPED_REDIRECT".to_owned(), 2));
    }

    #[test]
    fn bitfields_keep_their_offsets_and_widths() {
        let btf = testdata::object_btf();
        let shape = btf.find("typed_shape").expect("struct typed_shape");
        let TypeKind::Aggregate { members, .. } = &btf.get(shape).expect("type").kind else {
            panic!("a struct");
        };
        let level = members.iter().find(|m| m.name == "level").expect("level");
        assert_eq!((level.bit_offset, level.bitfield_bits), (35, 5));
    }

    #[test]
    fn broken_blobs_are_refused_with_what_is_wrong() {
        assert!(matches!(
            Btf::parse(&[0; 10]),
            Err(BtfError::Truncated { .. })
        ));
        let mut blob = testdata::object_btf_bytes();
        blob[0] = 0;
        assert!(matches!(Btf::parse(&blob), Err(BtfError::BadMagic { .. })));
        let mut blob = testdata::object_btf_bytes();
        let len = blob.len();
        blob.truncate(len - 10);
        assert!(matches!(
            Btf::parse(&blob),
            Err(BtfError::Truncated {
                what: "the string section",
                ..
            })
        ));
        let btf = testdata::object_btf();
        assert!(matches!(
            btf.get(100_000),
            Err(BtfError::NoSuchType { id: 100_000, .. })
        ));
    }

    #[test]
    fn a_typedef_loop_is_refused_not_followed_forever() {
        let btf = Btf {
            types: vec![
                BtfType {
                    name: String::new(),
                    kind: TypeKind::Void,
                },
                BtfType {
                    name: "a".into(),
                    kind: TypeKind::Alias(2),
                },
                BtfType {
                    name: "b".into(),
                    kind: TypeKind::Alias(1),
                },
            ],
        };
        assert!(matches!(btf.size_of(1), Err(BtfError::TooDeep { .. })));
    }
}
