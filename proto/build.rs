//! Builds the protocol with the vendored protoc, so a fresh machine needs no system protoc.

fn main() {
    let files = [
        "trellis/v1/resources.proto",
        "trellis/v1/discovery.proto",
        "trellis/v1/identity.proto",
        "trellis/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has a protoc for this platform");
    // google/protobuf/duration.proto, which resources.proto imports.
    let well_known =
        protoc_bin_vendored::include_path().expect("protoc-bin-vendored has the well-known types");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Resource bodies are shared between every proxy they go to: Bytes, not Vec<u8>.
    config.bytes(["."]);
    // `Resource` keeps its typed payload as the encoded bytes (src/resource.rs says why), so
    // it is written by hand rather than generated, and so is the key it holds.
    config.extern_path(".trellis.v1.Resource", "crate::resource::Resource");
    config.extern_path(".trellis.v1.ResourceKey", "crate::resource::ResourceKey");
    tonic_prost_build::configure()
        .compile_with_config(
            config,
            &files.map(std::path::PathBuf::from),
            &[".".into(), well_known],
        )
        .expect("compile the trellis/v1 protos");
}
