//! Fuzzing typed JSON input for writes (proptest over arbitrary JSON values
//! and mutations of what `--format json` shows; `cargo test -p mapsync --bin
//! mapsync fuzz_`, longer with `PROPTEST_CASES=100000`): against every
//! sized type of the typed test object's BTF, encoding never panics, gives
//! exactly the type's size when it succeeds, and an error names a field
//! under the path given.

use mapsync_core::btf::Btf;
use mapsync_core::btf::parse::TypeKind;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use super::encode;

/// Cases per property: modest by default (the whole fuzz set stays well
/// under a minute in a debug build), `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

fn btf() -> Btf {
    Btf::from_elf(mapsync_ebpf::TYPED_OBJECT).expect("typed.bpf.o has BTF")
}

/// Every type with a size (the ones input can be for), with that size.
fn sized_types(btf: &Btf) -> Vec<(u32, usize)> {
    (0..)
        .take_while(|id| btf.get(*id).is_ok())
        .filter_map(|id| Some((id, btf.size_of(id).ok()? as usize)))
        .filter(|(_, size)| *size <= 4096)
        .collect()
}

/// Member and enumerator names of the BTF, so objects and strings hit real
/// fields often.
fn names(btf: &Btf) -> Vec<String> {
    let mut names = vec!["x".to_owned(), String::new()];
    for id in 0.. {
        let Ok(ty) = btf.get(id) else { break };
        match &ty.kind {
            TypeKind::Aggregate { members, .. } => {
                names.extend(members.iter().map(|m| m.name.clone()))
            }
            TypeKind::Enum { values, .. } => names.extend(values.iter().map(|(n, _)| n.clone())),
            _ => {}
        }
    }
    names.sort();
    names.dedup();
    names
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-300i64..300).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(0.5)),
        Just(Value::from(1e300)),
    ]
}

fn json(names: Vec<String>) -> impl Strategy<Value = Value> {
    let name = prop::sample::select(names);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        name.clone().prop_map(Value::String),
        ".{0,24}".prop_map(Value::String),
        "0x[0-9a-fA-F]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
            proptest::collection::vec((name.clone(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Encodes `input` as every sized type; checks the outcome of each.
fn check_all(btf: &Btf, types: &[(u32, usize)], input: &Value) {
    for &(id, size) in types {
        check_one(btf, id, size, input);
    }
}

fn check_one(btf: &Btf, id: u32, size: usize, input: &Value) {
    match encode(btf, id, input, "value") {
        Ok(bytes) => assert_eq!(bytes.len(), size, "type {id}: {input}"),
        Err(error) => {
            assert!(
                error.path == "value"
                    || error.path.starts_with("value.")
                    || error.path.starts_with("value["),
                "type {id}: the error names no field under `value`: {error:?}"
            );
            assert!(!error.reason.is_empty(), "type {id}: {error:?}");
        }
    }
}

/// Replaces the leaf or subtree at `choice` (counting depth-first) by
/// `with`.
fn mutate(value: &mut Value, choice: &mut usize, with: &Value) -> bool {
    if *choice == 0 {
        *value = with.clone();
        return true;
    }
    *choice -= 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|item| mutate(item, choice, with)),
        Value::Object(members) => members.values_mut().any(|v| mutate(v, choice, with)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn fuzz_arbitrary_json_encodes_or_names_the_field(input in json(names(&btf()))) {
        let btf = btf();
        check_all(&btf, &sized_types(&btf), &input);
    }

    #[test]
    fn fuzz_shown_values_with_one_part_replaced_encode_or_name_the_field(
        pick in any::<prop::sample::Index>(),
        seed in proptest::collection::vec(any::<u8>(), 64),
        choice in 0usize..40,
        with in json(names(&btf())),
    ) {
        let btf = btf();
        let types = sized_types(&btf);
        let (id, size) = types[pick.index(types.len())];
        let bytes: Vec<u8> = seed.iter().copied().cycle().take(size).collect();
        if let Ok(decoded) = btf.decode(id, &bytes) {
            let mut shown: Value =
                serde_json::from_str(&mapsync_grpc::json::to_json(&decoded)).expect("JSON");
            let mut at = choice;
            mutate(&mut shown, &mut at, &with);
            check_one(&btf, id, size, &shown);
        }
    }
}

/// Seed corpus: inputs at the edges, run as plain tests against every type.
#[test]
fn fuzz_seed_corpus_of_json_inputs() {
    let btf = btf();
    let types = sized_types(&btf);
    let deep = (0..200).fold(Value::Null, |inner, _| Value::Array(vec![inner]));
    let seeds = [
        serde_json::json!(null),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(-0.0),
        serde_json::json!(1e308),
        serde_json::json!("0x"),
        serde_json::json!("0xffffffffffffffffffffffffffffffffffffffff"),
        serde_json::json!(""),
        serde_json::json!("\u{0}"),
        serde_json::json!("é"),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!({"": 1}),
        serde_json::json!(vec![0; 5000]),
        serde_json::json!("x".repeat(5000)),
        deep,
    ];
    for input in &seeds {
        check_all(&btf, &types, input);
    }
}
