//! Decoded keys and values ([`TypedValue`], from the BTF crate) as JSON
//! text, the form the `key_json` / `value_json` fields carry: compact, in
//! the shape of bpftool's pretty output. Rendering lives here, at the edge,
//! so that the BTF crate stays bytes in, values out.
//!
//! The text is written with serde_json through a formatter that keeps the
//! exact spelling these fields have always had: floats as Rust's shortest
//! round-trip form (`2.0`, `1e-5`), control characters other than `\n`,
//! `\r` and `\t` as `\u00XX`.

use std::io;

use mapsync_core::btf::TypedValue;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

/// `value` as compact JSON: integers as numbers, structs as objects by
/// member name (in declaration order), arrays as arrays, strings and
/// enumerators as strings, integers wider than 64 bits as `"0x..."`,
/// non-finite floats as strings (`"NaN"`), per-CPU values as
/// `[{"cpu":0,"value":...},...]`.
///
/// ```
/// use mapsync_core::btf::TypedValue;
/// let v = TypedValue::Struct(vec![("port".into(), TypedValue::Int(80))]);
/// assert_eq!(mapsync_grpc::json::to_json(&v), r#"{"port":80}"#);
/// ```
pub fn to_json(value: &TypedValue) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, Spelling);
    Json(value)
        .serialize(&mut serializer)
        .expect("a TypedValue always serializes: string keys, writes into memory");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// A [`TypedValue`] as serde sees it.
struct Json<'a>(&'a TypedValue);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TypedValue::Int(n) => serializer.serialize_i128(*n),
            TypedValue::BigInt(hex) => serializer.serialize_str(hex),
            TypedValue::Bool(b) => serializer.serialize_bool(*b),
            TypedValue::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            TypedValue::Float(f) => serializer.serialize_str(&f.to_string()),
            TypedValue::String(s) => serializer.serialize_str(s),
            TypedValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Json(item))?;
                }
                seq.end()
            }
            TypedValue::Struct(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (name, value) in members {
                    map.serialize_entry(name, &Json(value))?;
                }
                map.end()
            }
            TypedValue::PerCpu(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for (cpu, value) in values.iter().enumerate() {
                    seq.serialize_element(&OneCpu { cpu, value })?;
                }
                seq.end()
            }
        }
    }
}

/// One CPU's slot of a per-CPU value: `{"cpu":N,"value":...}`.
struct OneCpu<'a> {
    cpu: usize,
    value: &'a TypedValue,
}

impl Serialize for OneCpu<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("cpu", &self.cpu)?;
        map.serialize_entry("value", &Json(self.value))?;
        map.end()
    }
}

/// serde_json's compact output, but floats and control characters spelled
/// as the decoded fields have always spelled them.
struct Spelling;

impl Formatter for Spelling {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write!(writer, "{value:?}")
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            CharEscape::Backspace => writer.write_all(b"\\u0008"),
            CharEscape::FormFeed => writer.write_all(b"\\u000c"),
            other => CompactFormatter.write_char_escape(writer, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_covers_every_shape() {
        let value = TypedValue::Struct(vec![
            ("n".into(), TypedValue::Int(-3)),
            ("wide".into(), TypedValue::BigInt("0x1".into())),
            ("ok".into(), TypedValue::Bool(true)),
            ("ratio".into(), TypedValue::Float(0.5)),
            ("name".into(), TypedValue::String("a\"b\\c\n\u{1}".into())),
            (
                "list".into(),
                TypedValue::Array(vec![TypedValue::Int(1), TypedValue::Int(2)]),
            ),
            ("empty".into(), TypedValue::Struct(vec![])),
        ]);
        assert_eq!(
            to_json(&value),
            r#"{"n":-3,"wide":"0x1","ok":true,"ratio":0.5,"name":"a\"b\\c\n\u0001","list":[1,2],"empty":{}}"#
        );
    }

    #[test]
    fn per_cpu_values_are_listed_with_their_cpu() {
        let value = TypedValue::PerCpu(vec![TypedValue::Int(5), TypedValue::Int(7)]);
        assert_eq!(
            to_json(&value),
            r#"[{"cpu":0,"value":5},{"cpu":1,"value":7}]"#
        );
        assert_eq!(to_json(&TypedValue::PerCpu(vec![])), "[]");
    }

    #[test]
    fn integers_beyond_u64_and_non_finite_floats_stay_valid_json() {
        assert_eq!(
            to_json(&TypedValue::Int(u64::MAX as i128)),
            "18446744073709551615"
        );
        assert_eq!(
            to_json(&TypedValue::Int(i64::MIN as i128)),
            i64::MIN.to_string()
        );
        assert_eq!(to_json(&TypedValue::Float(f64::NAN)), r#""NaN""#);
        assert_eq!(to_json(&TypedValue::Float(f64::NEG_INFINITY)), r#""-inf""#);
        assert_eq!(to_json(&TypedValue::Float(2.0)), "2.0");
    }

    #[test]
    fn spelling_is_the_one_the_fields_always_had() {
        // serde_json alone would write `0.00001` and `\b` / `\f`
        assert_eq!(to_json(&TypedValue::Float(1e-5)), "1e-5");
        assert_eq!(to_json(&TypedValue::Float(1e16)), "1e16");
        assert_eq!(to_json(&TypedValue::Float(-0.25)), "-0.25");
        assert_eq!(
            to_json(&TypedValue::String("\u{8}\u{c}\t\r\u{1f}/é".into())),
            r#""\u0008\u000c\t\r\u001f/é""#
        );
    }

    #[test]
    fn the_text_is_json_that_reads_back_to_the_same_shape() {
        let value = TypedValue::Struct(vec![
            (
                "cpu".into(),
                TypedValue::PerCpu(vec![TypedValue::Float(1.5)]),
            ),
            ("s".into(), TypedValue::String("\u{7}x".into())),
        ]);
        let parsed: serde_json::Value = serde_json::from_str(&to_json(&value)).expect("valid JSON");
        assert_eq!(
            parsed,
            serde_json::json!({"cpu": [{"cpu": 0, "value": 1.5}], "s": "\u{7}x"})
        );
    }
}
