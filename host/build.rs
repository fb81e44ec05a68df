//! Generates the UDF worker protocol's Rust code from `proto/` (the single source of truth),
//! with a vendored `protoc`, so building needs no system Protobuf compiler; and lets the
//! binaries find the `libpython` the in-process runtime was built against.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto/headwater/udf/v1/worker.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["../proto/headwater/udf/v1/worker.proto"], &["../proto"])?;

    // pyo3 links libpython but sets no run-time search path; a Python installed outside the
    // system folders (pyenv, a custom prefix) would otherwise not be found when `headwater`
    // starts. Record its folder in the binaries.
    let config = pyo3_build_config::get();
    if let Some(lib_dir) = &config.lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    Ok(())
}
