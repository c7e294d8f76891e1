//! Bytes in memory order to [`TypedValue`]s, following a BTF type the way
//! bpftool's `btf_dumper` does.

use super::error::BtfError;
use super::parse::{Btf, IntType, MAX_DEPTH, Member, TypeKind};
use super::value::TypedValue;

/// Most values one decode of `size` bytes builds: one per bit, plus room
/// for zero-size members. Real types stay far below it; BTF whose members
/// overlap (a struct of itself at offset 0, arrays of zero-size elements)
/// would otherwise build exponentially many values from a few bytes.
pub(crate) fn values_allowed(size: usize) -> usize {
    size.saturating_mul(8).saturating_add(4096)
}

/// Values a decode may still build.
struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    fn take(&mut self, id: u32) -> Result<(), BtfError> {
        self.left = self.left.checked_sub(1).ok_or(BtfError::TooLarge {
            id,
            limit: self.limit,
        })?;
        Ok(())
    }
}

impl Btf {
    /// Decodes `data` as type `id`. `data` may be longer than the type
    /// (trailing bytes are ignored), not shorter.
    pub fn decode(&self, id: u32, data: &[u8]) -> Result<TypedValue, BtfError> {
        let limit = values_allowed(self.size_of(id)? as usize);
        let mut budget = Budget { left: limit, limit };
        self.decode_at(id, data, 0, &mut budget)
    }

    fn decode_at(
        &self,
        id: u32,
        data: &[u8],
        depth: usize,
        budget: &mut Budget,
    ) -> Result<TypedValue, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        budget.take(id)?;
        let need = self.size_of(id)? as usize;
        if data.len() < need {
            return Err(BtfError::ShortData {
                id,
                need,
                have: data.len(),
            });
        }
        let (id, ty) = self.resolve(id)?;
        Ok(match &ty.kind {
            TypeKind::Int(int) => int_value(int, data),
            TypeKind::Enum { size, .. } if *size as usize > 16 => {
                return Err(BtfError::Malformed {
                    id,
                    what: "an enum wider than 16 bytes",
                });
            }
            TypeKind::Ptr => TypedValue::Int(i128::from(unsigned(&data[..8]))),
            TypeKind::Enum {
                size,
                signed,
                values,
            } => {
                let raw = &data[..*size as usize];
                let value = if raw.is_empty() {
                    0
                } else if *signed {
                    signed_value(raw)
                } else {
                    i128::from(unsigned(raw))
                };
                // clang before 15 writes negative enumerators as unsigned
                // values of the enum's width: compare in that width
                let mask = low_bits(*size * 8);
                match values.iter().find(|(_, v)| (*v & mask) == (value & mask)) {
                    Some((name, _)) => TypedValue::String(name.clone()),
                    None => TypedValue::Int(value),
                }
            }
            TypeKind::Float { size } => match size {
                4 => TypedValue::Float(f64::from(f32::from_ne_bytes(
                    data[..4].try_into().expect("4 bytes"),
                ))),
                8 => TypedValue::Float(f64::from_ne_bytes(data[..8].try_into().expect("8 bytes"))),
                _ => TypedValue::BigInt(hex_of(&data[..*size as usize])),
            },
            TypeKind::Array { elem, len } => {
                if let Some(text) = self.char_array_string(*elem, data, *len) {
                    return Ok(TypedValue::String(text));
                }
                let step = self.size_of(*elem)? as usize;
                // (elements of zero bytes take no data: the budget bounds them)
                let mut items = Vec::with_capacity((*len as usize).min(budget.left));
                for i in 0..*len as usize {
                    items.push(self.decode_at(*elem, &data[i * step..], depth + 1, budget)?);
                }
                TypedValue::Array(items)
            }
            TypeKind::Aggregate { members, .. } => {
                let mut out = Vec::with_capacity(members.len());
                self.decode_members(members, data, depth, budget, &mut out)?;
                TypedValue::Struct(out)
            }
            TypeKind::Void => return Err(BtfError::Unsized { id, kind: "void" }),
            TypeKind::Alias(_) => unreachable!("resolved"),
            TypeKind::Other(kind) => return Err(BtfError::Unsized { id, kind }),
        })
    }

    fn decode_members(
        &self,
        members: &[Member],
        data: &[u8],
        depth: usize,
        budget: &mut Budget,
        out: &mut Vec<(String, TypedValue)>,
    ) -> Result<(), BtfError> {
        for member in members {
            let byte = (member.bit_offset / 8) as usize;
            let rest = data.get(byte..).ok_or(BtfError::ShortData {
                id: member.type_id,
                need: byte,
                have: data.len(),
            })?;
            let value = if member.bitfield_bits > 0 {
                budget.take(member.type_id)?;
                bitfield(self, member, data)?
            } else {
                self.decode_at(member.type_id, rest, depth + 1, budget)?
            };
            match value {
                // an anonymous struct or union: its members belong to us
                TypedValue::Struct(inner) if member.name.is_empty() => out.extend(inner),
                value => out.push((member.name.clone(), value)),
            }
        }
        Ok(())
    }

    /// bpftool's rule: an array of 1-byte chars that holds printable
    /// characters up to a NUL is a string. `len` is the array's length.
    fn char_array_string(&self, elem: u32, data: &[u8], len: u32) -> Option<String> {
        let (_, ty) = self.resolve(elem).ok()?;
        let TypeKind::Int(int) = &ty.kind else {
            return None;
        };
        if int.size != 1 || !(int.char || ty.name == "char") {
            return None;
        }
        let data = data.get(..len as usize)?;
        let end = data.iter().position(|b| *b == 0)?;
        let text = &data[..end];
        text.iter()
            .all(|b| (0x20..0x7f).contains(b))
            .then(|| String::from_utf8_lossy(text).into_owned())
    }
}

fn bitfield(btf: &Btf, member: &Member, data: &[u8]) -> Result<TypedValue, BtfError> {
    // the kernel's limit too: a bitfield is at most a 128-bit integer
    if member.bitfield_bits > 120 {
        return Err(BtfError::Malformed {
            id: member.type_id,
            what: "a bitfield wider than 120 bits",
        });
    }
    let start = (member.bit_offset / 8) as usize;
    let shift = member.bit_offset % 8;
    let span = (shift + member.bitfield_bits).div_ceil(8) as usize;
    let bytes = data.get(start..start + span).ok_or(BtfError::ShortData {
        id: member.type_id,
        need: start + span,
        have: data.len(),
    })?;
    let raw = (unsigned_wide(bytes) >> shift) & low_bits(member.bitfield_bits) as u128;
    let signed = matches!(
        &btf.resolve(member.type_id)?.1.kind,
        TypeKind::Int(IntType { signed: true, .. }) | TypeKind::Enum { signed: true, .. }
    );
    let bits = member.bitfield_bits;
    Ok(if signed && bits < 128 && raw >> (bits - 1) & 1 == 1 {
        TypedValue::Int(raw as i128 - (1i128 << bits))
    } else {
        TypedValue::Int(raw as i128)
    })
}

fn int_value(int: &IntType, data: &[u8]) -> TypedValue {
    let raw = &data[..int.size as usize];
    if int.bool {
        return TypedValue::Bool(raw.iter().any(|b| *b != 0));
    }
    if int.char && int.size == 1 {
        let c = raw[0];
        return if (0x20..0x7f).contains(&c) {
            TypedValue::String(char::from(c).to_string())
        } else {
            TypedValue::Int(i128::from(c))
        };
    }
    if int.size > 8 {
        return TypedValue::BigInt(hex_of(raw));
    }
    // (BTF's limits are bit_offset + bits <= 8 * size; a blob past them
    // reads as zero bits rather than shifting out of range)
    let value = unsigned(raw).checked_shr(int.bit_offset).unwrap_or(0);
    let bits = if int.bits == 0 {
        int.size * 8
    } else {
        int.bits
    };
    let value = value & low_bits(bits) as u64;
    if int.signed && (1..64).contains(&bits) && value >> (bits - 1) & 1 == 1 {
        TypedValue::Int(i128::from(value) - (1i128 << bits))
    } else if int.signed && bits == 64 {
        TypedValue::Int(i128::from(value as i64))
    } else {
        TypedValue::Int(i128::from(value))
    }
}

fn low_bits(bits: u32) -> i128 {
    if bits >= 127 {
        i128::MAX
    } else {
        (1i128 << bits) - 1
    }
}

/// Native-endian unsigned integer of up to 8 bytes.
fn unsigned(bytes: &[u8]) -> u64 {
    unsigned_wide(bytes) as u64
}

fn unsigned_wide(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    if cfg!(target_endian = "little") {
        buf[..bytes.len()].copy_from_slice(bytes);
        u128::from_le_bytes(buf)
    } else {
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        u128::from_be_bytes(buf)
    }
}

fn signed_value(bytes: &[u8]) -> i128 {
    let bits = bytes.len() as u32 * 8;
    let raw = unsigned_wide(bytes) as i128;
    if bits < 128 && raw >> (bits - 1) & 1 == 1 {
        raw - (1i128 << bits)
    } else {
        raw
    }
}

/// `0x` and the bytes as one number, most significant first (bpftool's
/// form for 128-bit integers).
fn hex_of(bytes: &[u8]) -> String {
    let mut ordered = bytes.to_vec();
    if cfg!(target_endian = "little") {
        ordered.reverse();
    }
    let digits: String = ordered.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{}", digits.trim_start_matches('0').max("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{self, fields, ints};

    fn flow_key(addr: u32, port: u16, proto: u16) -> Vec<u8> {
        [
            &addr.to_ne_bytes()[..],
            &port.to_ne_bytes(),
            &proto.to_ne_bytes(),
        ]
        .concat()
    }

    #[test]
    fn a_flow_key_and_value_decode_like_bpftool() {
        use TypedValue::{Int, String as Str};
        let btf = testdata::object_btf();
        let key = btf.find("typed_flow_key").expect("key type");
        assert_eq!(
            btf.decode(key, &flow_key(0x0100_007f, 443, 6))
                .expect("decode"),
            fields(&[
                ("addr", Int(16777343)),
                ("port", Int(443)),
                ("proto", Int(6))
            ])
        );
        let value = btf.find("typed_flow_value").expect("value type");
        let mut bytes = vec![0u8; 32];
        bytes[..8].copy_from_slice(&42u64.to_ne_bytes());
        bytes[8..12].copy_from_slice(b"web\0");
        bytes[24..28].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(
            btf.decode(value, &bytes).expect("decode"),
            fields(&[
                ("packets", Int(42)),
                ("name", Str("web".into())),
                ("verdict", Str("TYPED_DROP".into()))
            ])
        );
        bytes[24..28].copy_from_slice(&9u32.to_ne_bytes());
        bytes[8..24].copy_from_slice(&[0xff; 16]);
        assert_eq!(
            btf.decode(value, &bytes).expect("decode"),
            fields(&[
                ("packets", Int(42)),
                ("name", ints(&[-1; 16])),
                ("verdict", Int(9))
            ]),
            "no NUL: the chars as numbers; an unknown enum value as its number"
        );
    }

    #[test]
    fn bitfields_unions_anonymous_members_qualifiers_and_nested_arrays_decode() {
        use TypedValue::{Array, Bool, Int, String as Str};
        let btf = testdata::object_btf();
        let shape = btf.find("typed_shape").expect("shape type");
        let mut b = vec![0u8; 56];
        b[0..4].copy_from_slice(&(-5i32).to_ne_bytes());
        b[4] = 0b1011_0101; // flags = 0b101 (5), level = 0b10110 (22)
        b[5] = 1; // up
        b[6..8].copy_from_slice(&80u16.to_ne_bytes());
        b[8..10].copy_from_slice(&8080u16.to_ne_bytes());
        b[10..14].copy_from_slice(b"abcd"); // no NUL: not a string
        b[16..20].copy_from_slice(&0x0403_0201u32.to_ne_bytes());
        b[20..22].copy_from_slice(&1u16.to_ne_bytes());
        b[22..24].copy_from_slice(&2u16.to_ne_bytes());
        b[24..32].copy_from_slice(&(-7i64).to_ne_bytes());
        b[32..36].copy_from_slice(&u32::MAX.to_ne_bytes()); // TYPED_NEGATIVE
        for (i, n) in [1u32, 2, 3, 4].iter().enumerate() {
            b[36 + 4 * i..40 + 4 * i].copy_from_slice(&n.to_ne_bytes());
        }
        assert_eq!(
            btf.decode(shape, &b).expect("decode"),
            fields(&[
                ("delta", Int(-5)),
                ("flags", Int(5)),
                ("level", Int(22)),
                ("up", Bool(true)),
                ("ports", ints(&[80, 8080])),
                ("label", ints(&[97, 98, 99, 100])),
                (
                    "raw",
                    fields(&[("word", Int(67305985)), ("bytes", ints(&[1, 2, 3, 4]))])
                ),
                ("lo", Int(1)),
                ("hi", Int(2)),
                ("offset", Int(-7)),
                ("sign", Str("TYPED_NEGATIVE".into())),
                ("grid", Array(vec![ints(&[1, 2]), ints(&[3, 4])])),
            ])
        );
    }

    #[test]
    fn too_few_bytes_is_an_error_not_a_panic() {
        let btf = testdata::object_btf();
        let key = btf.find("typed_flow_key").expect("key type");
        assert_eq!(
            btf.decode(key, &[0; 5]),
            Err(BtfError::ShortData {
                id: key,
                need: 8,
                have: 5
            })
        );
    }

    #[test]
    fn integers_honour_sign_width_and_encoding() {
        let int = |size, signed, bits| IntType {
            size,
            signed,
            char: false,
            bool: false,
            bit_offset: 0,
            bits,
        };
        assert_eq!(int_value(&int(1, true, 8), &[0xff]), TypedValue::Int(-1));
        assert_eq!(
            int_value(&int(8, false, 64), &u64::MAX.to_ne_bytes()),
            TypedValue::Int(i128::from(u64::MAX))
        );
        assert_eq!(
            int_value(&int(8, true, 64), &i64::MIN.to_ne_bytes()),
            TypedValue::Int(i128::from(i64::MIN))
        );
        let mut wide = [0u8; 16];
        wide[0] = 0x2a;
        assert_eq!(
            int_value(&int(16, false, 128), &wide),
            TypedValue::BigInt("0x2a".into())
        );
        let ch = IntType {
            char: true,
            ..int(1, false, 8)
        };
        assert_eq!(int_value(&ch, b"A"), TypedValue::String("A".into()));
    }
}
