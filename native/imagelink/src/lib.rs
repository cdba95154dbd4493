//! Shared by every image's `build.rs`: link the image freestanding (no C runtime, no libc) with
//! its own script `linker/<name>.ld`. Binaries only, so host unit tests and clippy link normally.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The link arguments every image uses besides its script.
const FREESTANDING: &[&str] = &[
    "-nostartfiles",
    "-nostdlib",
    "-static",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=0x1000",
    "-Wl,-z,noexecstack",
    "-Wl,--orphan-handling=error",
];

/// Print the cargo directives that link this package's binaries with `linker/<script>.ld`.
pub fn link_image(script: &str) {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let path = manifest.join("../../linker").join(format!("{script}.ld"));
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-T{}", path.display());
    for arg in FREESTANDING {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
