//! Maps of large entries through the client: 1,100 entries of 256-byte keys
//! and 4 KiB values (4.4 MB, more than tonic's default 4 MiB receive limit)
//! list completely, in pages the server caps by bytes.

use bytes::Bytes;
use mapsync_client::Client;
use mapsync_core::{LogLimits, MapInfo, MapKind, Publisher, Store};
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::service::Limits;
use tokio::sync::oneshot;

const ENTRIES: u32 = 1100;
const KEY_BYTES: usize = 256;
const VALUE_BYTES: usize = 4096;

fn entry_key(i: u32) -> Bytes {
    let mut key = vec![0u8; KEY_BYTES];
    key[..4].copy_from_slice(&i.to_be_bytes());
    key.into()
}

fn big_store() -> (Store, Publisher) {
    let (store, mut writer) = Store::new(LogLimits::default());
    let info = MapInfo {
        name: "big".into(),
        id: 3,
        kernel_name: "big".into(),
        kind: MapKind::Hash,
        key_size: KEY_BYTES as u32,
        value_size: VALUE_BYTES as u32,
        max_entries: ENTRIES,
        value_bytes: VALUE_BYTES as u32,
        types: None,
        switchable: false,
    };
    let entries = (0..ENTRIES)
        .map(|i| (entry_key(i), Bytes::from(vec![i as u8; VALUE_BYTES]), 1))
        .collect();
    writer.add_map(info, entries, 0);
    writer.set_ready();
    (store, writer)
}

/// Lists `big` through the client from a server with `limits`.
async fn list_through_client(limits: Limits) {
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.endpoint();
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        limits,
        ..ServeOptions::default()
    };
    let (store, _writer) = big_store();
    let server = tokio::spawn(serve_with(listener, store, options, async {
        let _ = stopped.await;
    }));
    let mut client = Client::connect(&endpoint).await.expect("connect");
    let listing = client.list("big").await.expect("list");
    assert_eq!(listing.entries.len(), ENTRIES as usize);
    for (i, (key, value)) in listing.entries.iter().enumerate() {
        assert_eq!(key, &entry_key(i as u32));
        assert_eq!(value.len(), VALUE_BYTES);
        assert!(value.iter().all(|b| *b == i as u8), "value of entry {i}");
    }
    let _ = stop.send(());
    server.await.expect("server task").expect("clean shutdown");
}

#[tokio::test]
async fn a_map_of_4_kib_values_lists_completely() {
    list_through_client(Limits::default()).await;
}

#[tokio::test]
async fn the_client_accepts_pages_over_tonics_default_4_mib() {
    // 1,000 entries per page (the default page size) = 4.4 MB per page
    list_through_client(Limits {
        max_list_page_bytes: 16 << 20,
        ..Limits::default()
    })
    .await;
}
