//! Link the phase0-exit test image with its own linker script, freestanding (no C runtime, no libc).
//! Binaries only (host tooling such as clippy and tests is unaffected).

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = manifest.join("../../linker/phase0-exit.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        format!("-T{}", script.display()),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=0x1000".into(),
        "-Wl,-z,noexecstack".into(),
        "-Wl,--orphan-handling=error".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
