//! Bad configuration against a real kernel: each gets its precise error.

use mapsync_core::MapKind;
use mapsync_kernel::{KernelError, MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};

async fn start(pins: &PinDir, maps: Vec<MapSpec>) -> Result<MapSync, KernelError> {
    MapSync::start(SyncConfig {
        maps,
        pin_dir: pins.join("capture"),
        ..SyncConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_missing_pin_path_is_an_open_error_naming_the_path() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("missing");
    let path = pins.join("nothing-here");
    match start(&pins, vec![MapSpec::pin(None, &path)]).await {
        Err(KernelError::OpenPin { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected OpenPin, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pinned_program_is_not_a_map() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("notmap");
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(pins.path())
        .load(mapsync_ebpf::DEMO_OBJECT)
        .expect("load demo object");
    let program: &mut aya::programs::Xdp = ebpf
        .program_mut(mapsync_ebpf::DEMO_COUNT_PROGRAM)
        .expect("program")
        .try_into()
        .expect("xdp");
    program.load().expect("verify");
    let pin = pins.join("a-program");
    program.pin(&pin).expect("pin program");
    match start(&pins, vec![MapSpec::pin(None, &pin)]).await {
        Err(error @ KernelError::NotAMap { .. }) => {
            assert_eq!(
                error.to_string(),
                format!("{} is not a BPF map", pin.display())
            );
        }
        other => panic!("expected NotAMap, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unsupported_kind_is_refused_by_name() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("kind");
    let queue = pins.join("jobs");
    support::create_map(&queue, "queue", 0, 4, 8, "jobs");
    match start(&pins, vec![MapSpec::pin(None, &queue)]).await {
        Err(
            error @ KernelError::UnsupportedKind {
                kind: MapKind::Other(22),
                ..
            },
        ) => {
            assert!(
                error
                    .to_string()
                    .starts_with("map `jobs` is a type 22 map, which mapsync cannot mirror"),
                "{error}"
            );
        }
        other => panic!("expected UnsupportedKind, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_map_id_and_a_duplicate_name_are_refused() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("ids");
    match start(&pins, vec![MapSpec::id(None, u32::MAX - 1)]).await {
        Err(KernelError::OpenId { id, source }) => {
            assert_eq!(id, u32::MAX - 1);
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected OpenId, got {other:?}"),
    }
    let a = pins.join("a");
    let b = pins.join("b");
    support::create_map(&a, "hash", 4, 4, 8, "a");
    support::create_map(&b, "hash", 4, 4, 8, "b");
    match start(
        &pins,
        vec![
            MapSpec::pin(Some("same"), &a),
            MapSpec::pin(Some("same"), &b),
        ],
    )
    .await
    {
        Err(KernelError::DuplicateMap { name }) => assert_eq!(name, "same"),
        other => panic!("expected DuplicateMap, got {other:?}"),
    }
}
