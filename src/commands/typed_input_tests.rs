//! The encoder against the BTF of mapsync's typed test object: what
//! `--format json` shows encodes back to the same bytes, and bad input is
//! refused naming the field.

use mapsync_core::btf::Btf;
use serde_json::{Value, json};

use super::encode;

fn btf() -> Btf {
    Btf::from_elf(mapsync_ebpf::TYPED_OBJECT).expect("typed.bpf.o has BTF")
}

fn id(btf: &Btf, name: &str) -> u32 {
    btf.find(name).unwrap_or_else(|| panic!("type {name}"))
}

/// decode -> JSON -> encode.
fn round_trip(btf: &Btf, ty: u32, bytes: &[u8]) -> Vec<u8> {
    let json: Value = serde_json::from_str(&mapsync_grpc::json::to_json(
        &btf.decode(ty, bytes).expect("decodes"),
    ))
    .expect("JSON");
    encode(btf, ty, &json, "value").unwrap_or_else(|e| panic!("{json} does not encode: {e}"))
}

fn refusal(btf: &Btf, ty: &str, input: Value) -> String {
    encode(btf, id(btf, ty), &input, "value")
        .expect_err("refused")
        .to_string()
}

struct Random(u64);

impl Random {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

#[test]
fn decoded_keys_and_values_encode_back_to_the_same_bytes() {
    let btf = btf();
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let key = id(&btf, "typed_flow_key");
    let value = id(&btf, "typed_flow_value");
    let pair = id(&btf, "typed_pair");
    for _ in 0..200 {
        let bytes = random.bytes(8);
        assert_eq!(round_trip(&btf, key, &bytes), bytes);
        assert_eq!(round_trip(&btf, pair, &bytes), bytes);
        // packets, a NUL-terminated name (or not: then an array), a verdict
        // that may or may not be an enumerator, zero padding
        let mut bytes = random.bytes(32);
        bytes[28..].fill(0);
        if bytes[8] & 1 == 0 {
            let len = usize::from(bytes[9] % 16);
            for b in &mut bytes[8..8 + len] {
                *b = b'a' + *b % 26;
            }
            bytes[8 + len..24].fill(0);
        }
        if bytes[24] & 1 == 0 {
            let verdict = u32::from(bytes[25] % 3);
            bytes[24..28].copy_from_slice(&verdict.to_ne_bytes());
        }
        assert_eq!(round_trip(&btf, value, &bytes), bytes);
    }
}

#[test]
fn every_shape_encodes_as_it_is_shown() {
    let btf = btf();
    let shape = id(&btf, "typed_shape");
    let input = json!({
        "delta": -5, "flags": 5, "level": 31, "up": true, "ports": [80, 443], "label": "abc",
        "raw": {"word": 0x0403_0201u32, "bytes": [1, 2, 3, 4]},
        "lo": 7, "hi": 65535, "offset": -9_000_000_000i64, "sign": "TYPED_NEGATIVE",
        "grid": [[1, 2], [3, 4]]
    });
    let bytes = encode(&btf, shape, &input, "value").expect("encodes");
    let shown: Value = serde_json::from_str(&mapsync_grpc::json::to_json(
        &btf.decode(shape, &bytes).expect("decodes"),
    ))
    .expect("JSON");
    assert_eq!(shown, input);
    assert_eq!(round_trip(&btf, shape, &bytes), bytes);
    // members not given are zero; enums by number; a union by one member
    let sparse = encode(
        &btf,
        shape,
        &json!({"sign": 0, "raw": {"bytes": [9, 0, 0, 0]}}),
        "v",
    )
    .expect("encodes");
    let shown: Value = serde_json::from_str(&mapsync_grpc::json::to_json(
        &btf.decode(shape, &sparse).expect("decodes"),
    ))
    .expect("JSON");
    assert_eq!(shown["sign"], "TYPED_ZERO");
    assert_eq!(shown["raw"]["word"], 9);
    assert_eq!(shown["delta"], 0);
}

#[test]
fn bad_input_names_the_field_and_the_reason() {
    let btf = btf();
    assert_eq!(
        refusal(
            &btf,
            "typed_flow_key",
            json!({"addr": 1, "port": 70000, "proto": 6})
        ),
        "value.port: 70000 is out of range for u16"
    );
    assert_eq!(
        refusal(&btf, "typed_flow_key", json!({"addr": -1})),
        "value.addr: -1 is out of range for u32"
    );
    assert_eq!(
        refusal(&btf, "typed_flow_key", json!({"adr": 1})),
        "value.adr: unknown field of struct typed_flow_key (its fields: addr, port, proto)"
    );
    assert_eq!(
        refusal(&btf, "typed_flow_value", json!({"verdict": "TYPED_DORP"})),
        "value.verdict: `TYPED_DORP` is not an enumerator of enum typed_verdict \
         (TYPED_PASS, TYPED_DROP, TYPED_REDIRECT)"
    );
    assert_eq!(
        refusal(
            &btf,
            "typed_flow_value",
            json!({"name": "0123456789abcdef"})
        ),
        "value.name: the string is 16 bytes; char[16] holds at most 15 and its NUL"
    );
    assert_eq!(
        refusal(&btf, "typed_flow_value", json!({"packets": "many"})),
        "value.packets: expected an integer, got \"many\""
    );
    assert_eq!(
        refusal(&btf, "typed_flow_value", json!({"packets": 1.5})),
        "value.packets: expected an integer, got 1.5"
    );
    assert_eq!(
        refusal(&btf, "typed_flow_key", json!([1, 2])),
        "value: expected an object with the members of struct typed_flow_key, got [1,2]"
    );
    assert_eq!(
        refusal(&btf, "typed_shape", json!({"ports": [1]})),
        "value.ports: expected 2 elements, got 1"
    );
    assert_eq!(
        refusal(&btf, "typed_shape", json!({"grid": [[1, 2], [3, -4]]})),
        "value.grid[1][1]: -4 is out of range for u32"
    );
    assert_eq!(
        refusal(&btf, "typed_shape", json!({"flags": 8})),
        "value.flags: 8 is out of range for u3"
    );
    assert_eq!(
        refusal(&btf, "typed_shape", json!({"up": 2})),
        "value.up: expected true or false, got 2"
    );
    assert_eq!(
        refusal(
            &btf,
            "typed_shape",
            json!({"raw": {"word": 1, "bytes": [2, 0, 0, 0]}})
        ),
        "value.raw: the union's members word, bytes disagree on its bytes: give one"
    );
    assert_eq!(
        refusal(&btf, "typed_shape", json!({"lo": 1, "mid": 2})),
        "value.mid: unknown field of struct typed_shape (its fields: delta, flags, level, up, \
         ports, label, raw, lo, hi, offset, sign, grid)"
    );
}
