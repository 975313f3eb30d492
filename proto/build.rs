//! Builds the protocol with the vendored protoc, so a fresh machine needs no system protoc.

fn main() {
    let files = [
        "trellis/v1/discovery.proto",
        "trellis/v1/identity.proto",
        "trellis/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has a protoc for this platform");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Resource bodies are shared between every proxy they go to: Bytes, not Vec<u8>.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .compile_with_config(config, &files, &["."])
        .expect("compile the trellis/v1 protos");
}
