//! The benchmarks embed Python through the host's in-process runtime: record where the
//! `libpython` they were built against lives, so they start without LD_LIBRARY_PATH.

fn main() {
    if let Some(lib_dir) = &pyo3_build_config::get().lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
