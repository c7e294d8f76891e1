//! `mapsync list` on a map of large entries, end to end: 1,100 entries of
//! 256-byte keys and 4 KiB values (4.4 MB; it used to fail with "decoded
//! message length too large ... the limit is 4194304 bytes"), written by
//! bpftool, list completely and equal bpftool's dump.

mod common;

use std::collections::BTreeMap;

use common::{Server, json_lines, map_arg, pin};
use mapsync_test_support::{self as support, PinDir};

const ENTRIES: u32 = 1100;
const KEY_BYTES: usize = 256;
const VALUE_BYTES: usize = 4096;

#[test]
fn list_shows_every_entry_of_a_map_of_4_kib_values() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-large");
    let big = pin(&pins, "big");
    support::create_map(
        &big,
        "hash",
        KEY_BYTES as u32,
        VALUE_BYTES as u32,
        ENTRIES,
        "big",
    );
    for i in 0..ENTRIES {
        let mut key = vec![0u8; KEY_BYTES];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let value = vec![i as u8; VALUE_BYTES];
        support::update(&big, &key, &value).expect("bpftool update");
    }
    let server = Server::start(&pins, &[map_arg("big", &big)]);
    let output = server.cli(&["list", "big", "--json"]);
    assert!(
        output.status.success(),
        "list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: BTreeMap<String, String> = json_lines(&output.stdout)
        .into_iter()
        .map(|line| {
            (
                line["key"].as_str().expect("key").to_owned(),
                line["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    let dumped: BTreeMap<String, String> = support::dump(&big)
        .iter()
        .map(|(k, v)| (support::hex(k), support::hex(v)))
        .collect();
    assert_eq!(listed.len(), ENTRIES as usize);
    assert!(listed == dumped, "list differs from bpftool's dump");
}
