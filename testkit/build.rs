//! Compiles the test gRPC service with the vendored protoc, so no system protoc is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has a protoc for this platform");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .compile_with_config(config, &["proto/echo.proto"], &["proto"])
        .expect("compile proto/echo.proto");
}
