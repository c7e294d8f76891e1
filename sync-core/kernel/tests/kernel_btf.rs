//! Typed keys and values on a real kernel: maps loaded from `typed.bpf.o`
//! carry BTF, which `open` reads and decodes with; maps without BTF decode
//! to nothing. (How decoded values read as JSON is `mapsync_grpc::json`'s
//! test; here the decoded values themselves are checked.)

use std::os::fd::AsFd;

use mapsync_core::btf::TypedValue::{self, Int, PerCpu, String as Str};

use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir};

fn fields(members: &[(&str, TypedValue)]) -> TypedValue {
    TypedValue::Struct(
        members
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    )
}

/// A decoded `struct typed_flow_value`.
fn flow_value(packets: i128, name: &str, verdict: &str) -> TypedValue {
    fields(&[
        ("packets", Int(packets)),
        ("name", Str(name.into())),
        ("verdict", Str(verdict.into())),
    ])
}

#[test]
fn a_map_with_btf_opens_with_its_types_and_decodes_its_entries() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("btf-open");
    support::load_typed_maps(&pins);
    let map = open::open(&MapSpec::pin(None, pins.join("typed_flows"))).expect("open");
    let types = map.info.types.as_ref().expect("typed_flows carries BTF");
    assert_eq!(types.key_type_name(), "struct typed_flow_key");
    assert_eq!(types.value_type_name(), "struct typed_flow_value");
    let key = support::typed_flow_key(0x0a00_0001, 8080, 17);
    let value = support::typed_flow_value(7, "dns", 2);
    sys::update(map.fd.as_fd(), &key, &value, 0).expect("update");
    let mut read = vec![0u8; 32];
    assert!(sys::lookup(map.fd.as_fd(), &key, &mut read).expect("lookup"));
    assert_eq!(
        map.info.decode_key(&key).expect("typed").expect("decodes"),
        fields(&[
            ("addr", Int(167772161)),
            ("port", Int(8080)),
            ("proto", Int(17))
        ])
    );
    assert_eq!(
        map.info
            .decode_value(&read)
            .expect("typed")
            .expect("decodes"),
        flow_value(7, "dns", "TYPED_REDIRECT")
    );
}

#[test]
fn per_cpu_values_decode_per_cpu_and_bpftool_maps_have_no_types() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("btf-percpu");
    support::load_typed_maps(&pins);
    let map = open::open(&MapSpec::pin(None, pins.join("typed_cpu_counts"))).expect("open");
    let types = map
        .info
        .types
        .as_ref()
        .expect("typed_cpu_counts carries BTF");
    assert!(types.value_is_integer());
    let cpus = support::possible_cpus();
    let value: Vec<u8> = (0..cpus as u64)
        .flat_map(|cpu| (cpu * 10 + 1).to_ne_bytes())
        .collect();
    sys::update(map.fd.as_fd(), &3u32.to_ne_bytes(), &value, 0).expect("update");
    let expected = (0..cpus as i128).map(|cpu| Int(cpu * 10 + 1)).collect();
    assert_eq!(
        map.info
            .decode_value(&value)
            .expect("typed")
            .expect("decodes"),
        PerCpu(expected)
    );
    let pairs = open::open(&MapSpec::pin(None, pins.join("typed_cpu_pairs"))).expect("open");
    assert!(!pairs.info.types.as_ref().expect("typed").value_is_integer());

    let plain = pins.join("plain");
    support::create_map(&plain, "hash", 4, 4, 8, "plain");
    let plain = open::open(&MapSpec::pin(None, &plain)).expect("open");
    assert!(plain.info.types.is_none(), "bpftool's maps carry no BTF");
    assert!(plain.info.decode_key(&[0; 4]).is_none());
}

#[tokio::test]
async fn the_mirror_serves_the_types_with_the_map() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("btf-sync");
    support::load_typed_maps(&pins);
    let flows = pins.join("typed_flows");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(Some("flows"), &flows)],
        pin_dir: pins.join("capture"),
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let key = support::typed_flow_key(1, 2, 3);
    support::update(&flows, &key, &support::typed_flow_value(1, "x", 0)).expect("bpftool update");
    let store = sync.store().clone();
    let mut decoded = None;
    for _ in 0..250 {
        let snapshot = store.snapshot();
        let view = snapshot.map("flows").expect("mirrored");
        if let Some(value) = view.get(&key) {
            decoded = Some(
                view.info()
                    .decode_value(value)
                    .expect("typed")
                    .expect("decodes"),
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(decoded, Some(flow_value(1, "x", "TYPED_PASS")));
    sync.shutdown().await.expect("clean shutdown");
}
