//! Generates the protobuf and tonic code for `proto/mapsync/v1/mapsync.proto`
//! (with a vendored `protoc`), and the file descriptor set for reflection.
//! The client and server stubs are behind the `client` and `server` features;
//! no transport code is generated (callers bring their own channel).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("mapsync/v1/mapsync.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("mapsync_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .bytes(".")
        .build_transport(false)
        .client_mod_attribute(".", "#[cfg(feature = \"client\")]")
        .server_mod_attribute(".", "#[cfg(feature = \"server\")]")
        .compile_protos(&[proto], &[root])?;
    Ok(())
}
