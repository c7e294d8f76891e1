//! How keys and values are shown: `--format hex|json` and
//! `--per-cpu each|sum`, checked against the maps' shapes before anything is
//! printed.

use std::collections::HashMap;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use mapsync_client::{Client, MapDescription};
use serde_json::{Value, json};

/// How keys and values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lowercase hex bytes in memory order, as `bpftool map dump` shows them.
    Hex,
    /// Decoded with the map's BTF, like bpftool's pretty output: structs as
    /// objects by member name, char arrays as strings, enums by name.
    Json,
}

/// How per-CPU values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PerCpu {
    /// One value per possible CPU.
    Each,
    /// The sum over CPUs (integer values only).
    Sum,
}

/// `--format` and `--per-cpu`, shared by `get`, `list` and `watch`.
#[derive(Args, Debug, Clone)]
pub struct FormatArgs {
    /// Keys and values as hex bytes, or as JSON decoded with the map's BTF
    /// (the map must carry BTF for its key and value).
    #[arg(long, value_enum, default_value_t = Format::Hex)]
    pub format: Format,
    /// Per-CPU maps: one value per CPU, or their sum (for integer values of
    /// 1, 2, 4 or 8 bytes). No effect on other maps.
    #[arg(long, value_enum, default_value_t = PerCpu::Each)]
    pub per_cpu: PerCpu,
}

/// A value ready to print: under which name (`value`, or `values` for one
/// per CPU, as bpftool names them) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// `"value"` or `"values"`.
    pub field: &'static str,
    /// The value: a hex string, decoded JSON, or `[{"cpu":N,"value":..}]`.
    pub value: Value,
}

/// Renders keys and values of known maps as the flags ask.
#[derive(Debug, Clone)]
pub struct Renderer {
    args: FormatArgs,
    maps: HashMap<String, MapDescription>,
}

impl Renderer {
    /// Learns the shapes of `maps` (empty: every map) from the server and
    /// checks the flags fit them: `--format json` needs BTF, `--per-cpu sum`
    /// integer-sized values.
    pub async fn new(
        client: &mut Client,
        args: FormatArgs,
        maps: &[String],
    ) -> anyhow::Result<Self> {
        let described = client.list_maps().await?.maps;
        Self::checked(args, described, maps)
    }

    fn checked(
        args: FormatArgs,
        described: Vec<MapDescription>,
        maps: &[String],
    ) -> anyhow::Result<Self> {
        let maps: HashMap<String, MapDescription> = described
            .into_iter()
            .filter(|m| maps.is_empty() || maps.contains(&m.name))
            .map(|m| (m.name.clone(), m))
            .collect();
        let mut names: Vec<&String> = maps.keys().collect();
        names.sort();
        for name in names {
            let map = &maps[name];
            if args.format == Format::Json && !map.has_btf {
                bail!(
                    "map `{name}` has no BTF for its key and value, so `--format json` cannot \
                     decode it (maps created from a BPF object compiled with -g carry BTF; \
                     bpftool map create makes none): use `--format hex`"
                );
            }
            if args.per_cpu == PerCpu::Sum
                && map.is_per_cpu()
                && !matches!(map.value_size, 1 | 2 | 4 | 8)
            {
                bail!(
                    "`--per-cpu sum` needs integer values, but map `{name}` has {}-byte values: \
                     use `--per-cpu each`",
                    map.value_size
                );
            }
        }
        Ok(Self { args, maps })
    }

    /// Whether values should be asked for decoded.
    pub fn decode(&self) -> bool {
        self.args.format == Format::Json
    }

    fn map(&self, map: &str) -> anyhow::Result<&MapDescription> {
        self.maps
            .get(map)
            .with_context(|| format!("map `{map}` is not described by the server"))
    }

    /// A change's key and value (`None` on delete), rendered.
    pub fn event(&self, event: &mapsync_client::Event) -> anyhow::Result<(Value, Option<Shown>)> {
        let key = self.key(&event.map, &event.key, event.key_json.as_deref())?;
        let value = match &event.value {
            Some(value) => Some(self.value(&event.map, value, event.value_json.as_deref())?),
            None => None,
        };
        Ok((key, value))
    }

    /// A key: hex, or its decoded JSON.
    pub fn key(&self, map: &str, key: &[u8], key_json: Option<&str>) -> anyhow::Result<Value> {
        match self.args.format {
            Format::Hex => Ok(Value::String(hex(key))),
            Format::Json => parse(map, "key", key_json),
        }
    }

    /// A value (syscall layout): hex or decoded; per CPU or summed.
    pub fn value(
        &self,
        map: &str,
        value: &[u8],
        value_json: Option<&str>,
    ) -> anyhow::Result<Shown> {
        let shape = self.map(map)?;
        let decoded = match self.args.format {
            Format::Hex => None,
            Format::Json => Some(parse(map, "value", value_json)?),
        };
        if !shape.is_per_cpu() {
            let value = decoded.unwrap_or_else(|| Value::String(hex(value)));
            return Ok(Shown {
                field: "value",
                value,
            });
        }
        let size = shape.value_size as usize;
        let slot = size.div_ceil(8) * 8;
        match (self.args.per_cpu, decoded) {
            (PerCpu::Each, Some(values)) => Ok(Shown {
                field: "values",
                value: values,
            }),
            (PerCpu::Each, None) => Ok(Shown {
                field: "values",
                value: value
                    .chunks(slot)
                    .enumerate()
                    .map(
                        |(cpu, one)| json!({"cpu": cpu, "value": hex(&one[..size.min(one.len())])}),
                    )
                    .collect(),
            }),
            (PerCpu::Sum, Some(values)) => Ok(Shown {
                field: "value",
                value: sum_decoded(map, &values)?,
            }),
            (PerCpu::Sum, None) => {
                let sum = value
                    .chunks(slot)
                    .map(|one| unsigned(&one[..size.min(one.len())]))
                    .fold(0u64, u64::wrapping_add);
                Ok(Shown {
                    field: "value",
                    value: Value::String(hex(&low_bytes(sum, size))),
                })
            }
        }
    }
}

/// The low `size` bytes of `n`, in memory order.
fn low_bytes(n: u64, size: usize) -> Vec<u8> {
    let bytes = n.to_ne_bytes();
    if cfg!(target_endian = "little") {
        bytes[..size].to_vec()
    } else {
        bytes[8 - size..].to_vec()
    }
}

fn unsigned(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    if cfg!(target_endian = "little") {
        buf[..bytes.len()].copy_from_slice(bytes);
    } else {
        buf[8 - bytes.len()..].copy_from_slice(bytes);
    }
    u64::from_ne_bytes(buf)
}

fn parse(map: &str, what: &str, text: Option<&str>) -> anyhow::Result<Value> {
    let text = text.with_context(|| {
        format!("the server sent no decoded {what} for map `{map}` (its BTF did not decode it)")
    })?;
    serde_json::from_str(text)
        .with_context(|| format!("the server's decoded {what} for map `{map}` is not JSON: {text}"))
}

/// The sum of decoded per-CPU values `[{"cpu":N,"value":V}]`; every `V` must
/// be an integer.
fn sum_decoded(map: &str, values: &Value) -> anyhow::Result<Value> {
    let mut sum: i128 = 0;
    for slot in values.as_array().into_iter().flatten() {
        let value = &slot["value"];
        let n = value
            .as_u64()
            .map(i128::from)
            .or_else(|| value.as_i64().map(i128::from))
            .with_context(|| {
                format!(
                    "`--per-cpu sum` needs integer values, but map `{map}`'s values decode to \
                     {value} (not an integer): use `--per-cpu each`"
                )
            })?;
        sum += n;
    }
    Ok(u64::try_from(sum)
        .map(Value::from)
        .or_else(|_| i64::try_from(sum).map(Value::from))
        .unwrap_or_else(|_| Value::String(sum.to_string())))
}

/// A rendered key on a readable line: hex as it is, decoded keys as
/// compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A rendered value on a readable line, as [`text`]; one value per CPU as
/// `cpu0 V  cpu1 V`.
pub fn value_text(shown: &Shown) -> String {
    match (&shown.value, shown.field) {
        (Value::Array(slots), "values") => slots
            .iter()
            .map(|s| format!("cpu{} {}", s["cpu"], text(&s["value"])))
            .collect::<Vec<_>>()
            .join("  "),
        (value, _) => text(value),
    }
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses a key given on the command line: hex digits, optionally with
/// spaces, a `0x` prefix or `:` separators between bytes.
pub fn parse_hex(arg: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = arg
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&digits)
        .map_err(|error| anyhow::anyhow!("`{arg}` is not a hex byte string: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, kind: &str, value_size: u32, has_btf: bool) -> MapDescription {
        MapDescription {
            name: name.into(),
            id: 1,
            kind: kind.into(),
            key_size: 4,
            value_size,
            value_bytes: value_size,
            max_entries: 8,
            entries: 0,
            has_btf,
            kernel_name: name.into(),
            switchable: false,
            version: 0,
        }
    }

    fn renderer(
        format: Format,
        per_cpu: PerCpu,
        maps: Vec<MapDescription>,
    ) -> anyhow::Result<Renderer> {
        Renderer::checked(FormatArgs { format, per_cpu }, maps, &[])
    }

    #[test]
    fn keys_parse_from_common_hex_spellings() {
        for arg in ["0a000001", "0x0a000001", "0a 00 00 01", "0A:00:00:01"] {
            assert_eq!(parse_hex(arg).expect(arg), vec![10, 0, 0, 1]);
        }
        assert!(
            parse_hex("0g")
                .unwrap_err()
                .to_string()
                .contains("not a hex byte string")
        );
        assert!(parse_hex("abc").is_err(), "odd number of digits");
    }

    #[test]
    fn json_on_a_map_without_btf_names_the_map() {
        let error = renderer(
            Format::Json,
            PerCpu::Each,
            vec![map("plain", "hash", 4, false)],
        )
        .expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with("map `plain` has no BTF for its key and value"),
            "{error}"
        );
        let only_typed = Renderer::checked(
            FormatArgs {
                format: Format::Json,
                per_cpu: PerCpu::Each,
            },
            vec![
                map("plain", "hash", 4, false),
                map("typed", "hash", 4, true),
            ],
            &["typed".to_owned()],
        );
        assert!(only_typed.is_ok(), "maps not asked for are not checked");
    }

    #[test]
    fn sum_needs_integer_sized_per_cpu_values() {
        let error = renderer(
            Format::Hex,
            PerCpu::Sum,
            vec![map("wide", "percpu_hash", 12, false)],
        )
        .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "`--per-cpu sum` needs integer values, but map `wide` has 12-byte values: use `--per-cpu each`"
        );
        assert!(
            renderer(
                Format::Hex,
                PerCpu::Sum,
                vec![map("flat", "hash", 12, false)]
            )
            .is_ok()
        );
    }

    #[test]
    fn hex_per_cpu_values_show_each_cpu_or_their_sum() {
        let maps = vec![map("c", "percpu_array", 4, false)];
        let bytes = [1u8, 0, 0, 0, 9, 9, 9, 9, 2, 0, 0, 0, 9, 9, 9, 9];
        let each = renderer(Format::Hex, PerCpu::Each, maps.clone()).expect("fits");
        let shown = each.value("c", &bytes, None).expect("renders");
        assert_eq!(shown.field, "values");
        assert_eq!(
            shown.value,
            json!([{"cpu": 0, "value": "01000000"}, {"cpu": 1, "value": "02000000"}])
        );
        assert_eq!(value_text(&shown), "cpu0 01000000  cpu1 02000000");
        let sum = renderer(Format::Hex, PerCpu::Sum, maps).expect("fits");
        let shown = sum.value("c", &bytes, None).expect("renders");
        assert_eq!((shown.field, shown.value), ("value", json!("03000000")));
    }

    #[test]
    fn decoded_per_cpu_values_sum_only_when_integers() {
        let maps = vec![map("c", "percpu_hash", 8, true)];
        let sum = renderer(Format::Json, PerCpu::Sum, maps).expect("fits");
        let ints = r#"[{"cpu":0,"value":5},{"cpu":1,"value":-2}]"#;
        assert_eq!(
            sum.value("c", &[], Some(ints)).expect("sums").value,
            json!(3)
        );
        let pairs = r#"[{"cpu":0,"value":{"first":1,"second":2}}]"#;
        let error = sum.value("c", &[], Some(pairs)).expect_err("not integers");
        assert_eq!(
            error.to_string(),
            "`--per-cpu sum` needs integer values, but map `c`'s values decode to \
             {\"first\":1,\"second\":2} (not an integer): use `--per-cpu each`"
        );
    }

    #[test]
    fn decoded_keys_and_values_are_json_and_hex_stays_hex() {
        let maps = vec![map("t", "hash", 4, true)];
        let json_renderer = renderer(Format::Json, PerCpu::Each, maps.clone()).expect("fits");
        assert_eq!(
            json_renderer
                .key("t", &[1], Some(r#"{"a":1}"#))
                .expect("key"),
            json!({"a": 1})
        );
        assert!(
            json_renderer.key("t", &[1], None).is_err(),
            "nothing decoded"
        );
        let hex_renderer = renderer(Format::Hex, PerCpu::Each, maps).expect("fits");
        let shown = hex_renderer
            .value("t", &[0xab, 1, 2, 3], None)
            .expect("value");
        assert_eq!(
            (shown.field, value_text(&shown)),
            ("value", "ab010203".to_owned())
        );
    }
}
