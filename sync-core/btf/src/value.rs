//! Decoded keys and values, and their JSON text (the shape of bpftool's
//! pretty output).

use std::fmt::Write as _;

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

impl TypedValue {
    /// The value as compact JSON: integers as numbers, structs as objects by
    /// member name, arrays as arrays, strings and enumerators as strings,
    /// per-CPU values as `[{"cpu":0,"value":...},...]`.
    ///
    /// ```
    /// use mapsync_btf::TypedValue;
    /// let v = TypedValue::Struct(vec![("port".into(), TypedValue::Int(80))]);
    /// assert_eq!(v.to_json(), r#"{"port":80}"#);
    /// ```
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            TypedValue::Int(n) => {
                let _ = write!(out, "{n}");
            }
            TypedValue::BigInt(hex) => json_string(out, hex),
            TypedValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            TypedValue::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f:?}");
            }
            TypedValue::Float(f) => json_string(out, &f.to_string()),
            TypedValue::String(s) => json_string(out, s),
            TypedValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            TypedValue::Struct(members) => {
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(out, name);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
            TypedValue::PerCpu(values) => {
                out.push('[');
                for (cpu, value) in values.iter().enumerate() {
                    if cpu > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{{\"cpu\":{cpu},\"value\":");
                    value.write_json(out);
                    out.push('}');
                }
                out.push(']');
            }
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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
            value.to_json(),
            r#"{"n":-3,"wide":"0x1","ok":true,"ratio":0.5,"name":"a\"b\\c\n\u0001","list":[1,2],"empty":{}}"#
        );
    }

    #[test]
    fn per_cpu_values_are_listed_with_their_cpu() {
        let value = TypedValue::PerCpu(vec![TypedValue::Int(5), TypedValue::Int(7)]);
        assert_eq!(
            value.to_json(),
            r#"[{"cpu":0,"value":5},{"cpu":1,"value":7}]"#
        );
    }

    #[test]
    fn integers_beyond_u64_and_non_finite_floats_stay_valid_json() {
        assert_eq!(
            TypedValue::Int(u64::MAX as i128).to_json(),
            "18446744073709551615"
        );
        assert_eq!(TypedValue::Float(f64::NAN).to_json(), r#""NaN""#);
        assert_eq!(TypedValue::Float(2.0).to_json(), "2.0");
    }
}
