//! Shared by every image's `build.rs`: link the image freestanding (no C runtime, no libc) with
//! the one script `linker/image.ld`, giving it this image's numbers from [`IMAGES`] as `--defsym`
//! symbols. Binaries only, so host unit tests and clippy link normally.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Where an image lives and how much startup stack it reserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `IMAGE_BASE`: the image's first address (its text segment starts there).
    pub base: u64,
    /// `STACK_SIZE`: the startup stack reserve at the end of the data segment.
    pub stack: u64,
    /// `ISOLATION_DATA`: where the image's one-page `.isolation` section must start, if it has
    /// one (phase0-isolation-a only).
    pub isolation: Option<u64>,
}

const KIB: u64 = 1024;

/// The stack reserve of every image but procd.
const STACK: u64 = 16 * KIB;

/// The size of an `.isolation` section (`ISOLATION_SIZE`): one 4 KiB page.
pub const ISOLATION_SIZE: u64 = 4 * KIB;

/// An image at `base` with the usual stack and no `.isolation` page.
const fn at(base: u64) -> Layout {
    Layout {
        base,
        stack: STACK,
        isolation: None,
    }
}

/// Every image of the workspace, by package name. The bases are distinct (docs/abi.md lists
/// them with the boot images); bench-compute, run alone by the benches, is apart from the rest.
pub const IMAGES: &[(&str, Layout)] = &[
    (
        "procd",
        Layout {
            base: 0x40_0000,
            stack: 64 * KIB,
            isolation: None,
        },
    ),
    ("phase0-exit", at(0x100_0000)),
    ("phase0-fault-kill", at(0x110_0000)),
    (
        "phase0-isolation-a",
        Layout {
            // abi::ISOLATION_A_DATA_VADDR (a test holds them equal).
            isolation: Some(0x121_0000),
            ..at(0x120_0000)
        },
    ),
    ("phase0-isolation-b", at(0x130_0000)),
    ("phase0-probe", at(0x140_0000)),
    ("phase1-lookup-client", at(0x150_0000)),
    ("phase1-time-client", at(0x160_0000)),
    ("phase2-irq-client", at(0x170_0000)),
    ("svc-stub", at(0x180_0000)),
    ("phase1-spawner", at(0x190_0000)),
    ("phase0-deep-fault", at(0x1a0_0000)),
    ("bench-compute", at(0x200_0000)),
];

/// The link arguments every image uses besides its script and its numbers.
const FREESTANDING: &[&str] = &[
    "-nostartfiles",
    "-nostdlib",
    "-static",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=0x1000",
    "-Wl,-z,noexecstack",
    "-Wl,--orphan-handling=error",
];

/// The layout of the image built by package `name`, if [`IMAGES`] has it.
pub fn layout_of(name: &str) -> Option<Layout> {
    IMAGES
        .iter()
        .find(|(image, _)| *image == name)
        .map(|&(_, layout)| layout)
}

/// The `--defsym` link arguments that give `linker/image.ld` the numbers of `layout`.
pub fn defsyms(layout: &Layout) -> Vec<String> {
    let mut symbols = vec![("IMAGE_BASE", layout.base), ("STACK_SIZE", layout.stack)];
    if let Some(address) = layout.isolation {
        symbols.push(("ISOLATION_DATA", address));
        symbols.push(("ISOLATION_SIZE", ISOLATION_SIZE));
    }
    symbols
        .into_iter()
        .map(|(symbol, value)| format!("-Wl,--defsym={symbol}={value:#x}"))
        .collect()
}

/// Print the cargo directives that link this package's binaries with `linker/image.ld` and
/// the package's [`Layout`]. Panics (failing the build with the message) for a package that
/// [`IMAGES`] does not list.
pub fn link_image() {
    let name = std::env::var("CARGO_PKG_NAME").expect("set by cargo");
    let Some(layout) = layout_of(&name) else {
        panic!("imagelink: no layout for image {name:?}: add it to IMAGES in native/imagelink");
    };
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = manifest.join("../../linker/image.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    for arg in FREESTANDING
        .iter()
        .map(|a| a.to_string())
        .chain(defsyms(&layout))
    {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

#[cfg(test)]
mod tests;
