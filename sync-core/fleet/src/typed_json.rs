//! Typed JSON: JSON encoded into a key's or value's bytes through the map's
//! BTF, the inverse of `--format json` (what `list --format json` prints,
//! `put`/`apply --format json` take back, and what a follower with
//! `--follow-format MAP=json` reads from etcd values).
//!
//! Rules: integers are JSON numbers, range-checked against their width and
//! signedness (bitfields against their bits); `_Bool` is `true`/`false` (or
//! 0/1); a 1-byte `char` is a one-character string or a number; integers
//! wider than 64 bits are `"0x..."` hex numbers, as bpftool prints them;
//! enums are an enumerator's name or a number in range; floats are numbers;
//! char arrays are strings (shorter than the array, which keeps its NUL) or
//! arrays; other arrays are arrays of exactly their length; structs are
//! objects by member name (members of anonymous inner structs and unions
//! are given in the parent, as they are shown); a member not given is zero,
//! a name that is no member is an error. A union takes any of its members;
//! several given must agree on the bytes they share. Every error names the
//! field path: `value.rule.port: 70000 is out of range for u16`.

use std::collections::HashSet;

use mapsync_core::btf::Btf;
use mapsync_core::btf::parse::{IntType, Member, TypeKind};
use serde_json::Value;

/// Most type references followed from one type (as the decoder allows).
const MAX_DEPTH: usize = 32;

/// Why an input does not encode: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InputError {
    /// The field path, `key`, `value.name`, `value.ports[1]`.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

/// Encodes `input` as BTF type `id` into exactly its size in bytes;
/// `path` names the whole (`key`, `value`) in errors.
pub fn encode(btf: &Btf, id: u32, input: &Value, path: &str) -> Result<Vec<u8>, InputError> {
    let encoder = Encoder { btf };
    let size = encoder.size(id, path)?;
    let mut out = vec![0u8; size];
    encoder.write(id, input, &mut out, path, 0)?;
    Ok(out)
}

struct Encoder<'a> {
    btf: &'a Btf,
}

fn error(path: &str, reason: impl Into<String>) -> InputError {
    InputError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A JSON value, short, for messages.
fn shown(input: &Value) -> String {
    let text = input.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(37).collect::<String>())
    } else {
        text
    }
}

impl Encoder<'_> {
    fn size(&self, id: u32, path: &str) -> Result<usize, InputError> {
        self.btf
            .size_of(id)
            .map(|size| size as usize)
            .map_err(|e| error(path, e.to_string()))
    }

    fn write(
        &self,
        id: u32,
        input: &Value,
        out: &mut [u8],
        path: &str,
        depth: usize,
    ) -> Result<(), InputError> {
        if depth > MAX_DEPTH {
            return Err(error(path, "types nest too deeply"));
        }
        let (id, ty) = self
            .btf
            .resolve(id)
            .map_err(|e| error(path, e.to_string()))?;
        match &ty.kind {
            TypeKind::Int(int) => write_int(int, input, out, path),
            TypeKind::Ptr => {
                let n = integer(input, path)?;
                let n = in_range(n, 64, false, path)?;
                out[..8].copy_from_slice(&(n as u64).to_ne_bytes());
                Ok(())
            }
            TypeKind::Enum {
                size,
                signed,
                values,
            } => {
                let n = match input {
                    Value::String(name) => values
                        .iter()
                        .find(|(enumerator, _)| enumerator == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| {
                            let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                            error(
                                path,
                                format!(
                                    "`{name}` is not an enumerator of {} ({})",
                                    self.btf.type_name(id),
                                    names.join(", ")
                                ),
                            )
                        })?,
                    _ => {
                        let n = integer(input, path)?;
                        // clang before 15 writes negative enumerators as
                        // unsigned: accept both spellings of the width
                        if in_range(n, *size * 8, *signed, path).is_err() {
                            in_range(n, *size * 8, !*signed, path)?
                        } else {
                            n
                        }
                    }
                };
                put_int(out, *size as usize, n);
                Ok(())
            }
            TypeKind::Float { size } => {
                let f = input.as_f64().ok_or_else(|| {
                    error(path, format!("expected a number, got {}", shown(input)))
                })?;
                match size {
                    4 => out[..4].copy_from_slice(&(f as f32).to_ne_bytes()),
                    8 => out[..8].copy_from_slice(&f.to_ne_bytes()),
                    _ => return Err(error(path, format!("{size}-byte floats are not supported"))),
                }
                Ok(())
            }
            TypeKind::Array { elem, len } => self.write_array(*elem, *len, input, out, path, depth),
            TypeKind::Aggregate { union, members, .. } => {
                let Value::Object(object) = input else {
                    return Err(error(
                        path,
                        format!(
                            "expected an object with the members of {}, got {}",
                            self.btf.type_name(id),
                            shown(input)
                        ),
                    ));
                };
                let mut used = HashSet::new();
                self.write_members(members, *union, object, out, path, depth, &mut used)?;
                if let Some(unknown) = object.keys().find(|k| !used.contains(k.as_str())) {
                    let mut names = Vec::new();
                    self.member_names(members, &mut names);
                    return Err(error(
                        &format!("{path}.{unknown}"),
                        format!(
                            "unknown field of {} (its fields: {})",
                            self.btf.type_name(id),
                            names.join(", ")
                        ),
                    ));
                }
                Ok(())
            }
            TypeKind::Void | TypeKind::Alias(_) | TypeKind::Other(_) => Err(error(
                path,
                format!("type {} holds no data", self.btf.type_name(id)),
            )),
        }
    }

    fn write_array(
        &self,
        elem: u32,
        len: u32,
        input: &Value,
        out: &mut [u8],
        path: &str,
        depth: usize,
    ) -> Result<(), InputError> {
        let len = len as usize;
        if let (Value::String(text), true) = (input, self.is_char(elem)) {
            if text.len() >= len {
                return Err(error(
                    path,
                    format!(
                        "the string is {} bytes; char[{len}] holds at most {} and its NUL",
                        text.len(),
                        len.saturating_sub(1)
                    ),
                ));
            }
            if text.as_bytes().contains(&0) {
                return Err(error(path, "the string contains a NUL byte"));
            }
            out[..text.len()].copy_from_slice(text.as_bytes());
            return Ok(());
        }
        let Value::Array(items) = input else {
            let what = if self.is_char(elem) {
                "a string or an array"
            } else {
                "an array"
            };
            return Err(error(
                path,
                format!("expected {what} of {len} elements, got {}", shown(input)),
            ));
        };
        if items.len() != len {
            return Err(error(
                path,
                format!("expected {len} elements, got {}", items.len()),
            ));
        }
        let step = self.size(elem, path)?;
        for (i, item) in items.iter().enumerate() {
            let slot = &mut out[i * step..(i + 1) * step];
            self.write(elem, item, slot, &format!("{path}[{i}]"), depth + 1)?;
        }
        Ok(())
    }

    fn is_char(&self, elem: u32) -> bool {
        matches!(self.btf.resolve(elem), Ok((_, ty)) if matches!(&ty.kind,
            TypeKind::Int(int) if int.size == 1 && (int.char || ty.name == "char")))
    }

    /// Writes the given members of an aggregate into `out`, marking the
    /// names used; anonymous inner aggregates read from the same object.
    #[allow(clippy::too_many_arguments)]
    fn write_members(
        &self,
        members: &[Member],
        union: bool,
        object: &serde_json::Map<String, Value>,
        out: &mut [u8],
        path: &str,
        depth: usize,
        used: &mut HashSet<String>,
    ) -> Result<(), InputError> {
        let mut given = Vec::new();
        for member in members {
            let byte = (member.bit_offset / 8) as usize;
            if member.name.is_empty() {
                let inner = self.btf.resolve(member.type_id).ok();
                if let Some((_, ty)) = inner
                    && let TypeKind::Aggregate { union, members, .. } = &ty.kind
                {
                    let size = self.size(member.type_id, path)?;
                    let region = &mut out[byte..byte + size];
                    self.write_members(members, *union, object, region, path, depth + 1, used)?;
                }
                continue;
            }
            let Some(input) = object.get(&member.name) else {
                continue;
            };
            used.insert(member.name.clone());
            let field = format!("{path}.{}", member.name);
            if member.bitfield_bits > 0 {
                self.write_bitfield(member, input, out, &field)?;
                continue;
            }
            let size = self.size(member.type_id, &field)?;
            self.write(
                member.type_id,
                input,
                &mut out[byte..byte + size],
                &field,
                depth + 1,
            )?;
            given.push((member, input, byte, size));
        }
        if union && given.len() > 1 {
            // each member alone must give the bytes the union now holds
            for (member, input, byte, size) in &given {
                let mut alone = vec![0u8; *size];
                let field = format!("{path}.{}", member.name);
                self.write(member.type_id, input, &mut alone, &field, depth + 1)?;
                if alone[..] != out[*byte..byte + size] {
                    let names: Vec<&str> = given.iter().map(|g| g.0.name.as_str()).collect();
                    return Err(error(
                        path,
                        format!(
                            "the union's members {} disagree on its bytes: give one",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn write_bitfield(
        &self,
        member: &Member,
        input: &Value,
        out: &mut [u8],
        path: &str,
    ) -> Result<(), InputError> {
        let signed = matches!(
            self.btf.resolve(member.type_id).map(|(_, ty)| &ty.kind),
            Ok(TypeKind::Int(IntType { signed: true, .. }) | TypeKind::Enum { signed: true, .. })
        );
        let bits = member.bitfield_bits;
        let n = in_range(integer(input, path)?, bits, signed, path)?;
        let start = (member.bit_offset / 8) as usize;
        let shift = member.bit_offset % 8;
        let span = (shift + bits).div_ceil(8) as usize;
        let region = &mut out[start..start + span];
        let mask = low_mask(bits) << shift;
        let old = read_wide(region);
        let new = (old & !mask) | (((n as u128) << shift) & mask);
        write_wide(region, new);
        Ok(())
    }

    fn member_names(&self, members: &[Member], names: &mut Vec<String>) {
        for member in members {
            if member.name.is_empty() {
                if let Ok((_, ty)) = self.btf.resolve(member.type_id)
                    && let TypeKind::Aggregate { members, .. } = &ty.kind
                {
                    self.member_names(members, names);
                }
            } else {
                names.push(member.name.clone());
            }
        }
    }
}

fn write_int(int: &IntType, input: &Value, out: &mut [u8], path: &str) -> Result<(), InputError> {
    let size = int.size as usize;
    if int.bool {
        let on = match input {
            Value::Bool(b) => *b,
            Value::Number(n) if n.as_u64() == Some(0) => false,
            Value::Number(n) if n.as_u64() == Some(1) => true,
            other => {
                return Err(error(
                    path,
                    format!("expected true or false, got {}", shown(other)),
                ));
            }
        };
        out[0] = u8::from(on);
        return Ok(());
    }
    if int.char
        && size == 1
        && let Value::String(text) = input
    {
        return match text.as_bytes() {
            [byte] => {
                out[0] = *byte;
                Ok(())
            }
            _ => Err(error(
                path,
                format!("a char takes one ASCII character, got {}", shown(input)),
            )),
        };
    }
    if size > 8 {
        let Value::String(text) = input else {
            return Err(error(
                path,
                format!(
                    "a {size}-byte integer is written as a \"0x...\" hex string, got {}",
                    shown(input)
                ),
            ));
        };
        let digits = text.strip_prefix("0x").unwrap_or(text);
        let n = u128::from_str_radix(digits, 16)
            .ok()
            .filter(|_| size <= 16 && digits.len() <= size * 2)
            .ok_or_else(|| {
                error(
                    path,
                    format!("`{text}` is not a hex number of at most {size} bytes"),
                )
            })?;
        let bytes = n.to_ne_bytes();
        if cfg!(target_endian = "little") {
            out[..size].copy_from_slice(&bytes[..size]);
        } else {
            out[..size].copy_from_slice(&bytes[16 - size..]);
        }
        return Ok(());
    }
    let bits = if int.bits == 0 {
        size as u32 * 8
    } else {
        int.bits
    };
    let n = in_range(integer(input, path)?, bits, int.signed, path)?;
    let raw = ((n as u128) & low_mask(bits)) << int.bit_offset;
    put_int(out, size, raw as i128);
    Ok(())
}

/// A JSON integer.
fn integer(input: &Value, path: &str) -> Result<i128, InputError> {
    input
        .as_i64()
        .map(i128::from)
        .or_else(|| input.as_u64().map(i128::from))
        .ok_or_else(|| error(path, format!("expected an integer, got {}", shown(input))))
}

/// `n` if it fits `bits` bits of that signedness.
fn in_range(n: i128, bits: u32, signed: bool, path: &str) -> Result<i128, InputError> {
    let (min, max) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if n < min || n > max {
        let name = if signed { 'i' } else { 'u' };
        return Err(error(path, format!("{n} is out of range for {name}{bits}")));
    }
    Ok(n)
}

fn low_mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// The low `size` bytes of `n` (two's complement), in memory order.
fn put_int(out: &mut [u8], size: usize, n: i128) {
    write_wide(&mut out[..size], n as u128);
}

fn read_wide(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    if cfg!(target_endian = "little") {
        buf[..bytes.len()].copy_from_slice(bytes);
        u128::from_le_bytes(buf)
    } else {
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        u128::from_be_bytes(buf)
    }
}

fn write_wide(bytes: &mut [u8], n: u128) {
    let len = bytes.len();
    if cfg!(target_endian = "little") {
        bytes.copy_from_slice(&n.to_le_bytes()[..len]);
    } else {
        bytes.copy_from_slice(&n.to_be_bytes()[16 - len..]);
    }
}
