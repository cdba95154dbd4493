//! The layout table is complete and consistent, and becomes the expected link arguments.

use super::*;
use std::collections::BTreeSet;
use std::path::Path;

const MIB: u64 = 1024 * 1024;

#[test]
fn every_image_crate_has_one_layout_and_every_layout_an_image_crate() {
    // An image crate is a workspace member whose build.rs links an image.
    let native = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates = BTreeSet::new();
    for entry in std::fs::read_dir(&native).unwrap() {
        let dir = entry.unwrap().path();
        let build = std::fs::read_to_string(dir.join("build.rs")).unwrap_or_default();
        if build.contains("imagelink::link_image()") {
            crates.insert(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    let names: Vec<&str> = IMAGES.iter().map(|(name, _)| *name).collect();
    let listed: BTreeSet<String> = names.iter().map(|name| name.to_string()).collect();
    assert_eq!(names.len(), listed.len(), "a name is listed twice");
    assert_eq!(crates, listed);
}

#[test]
fn bases_are_distinct_aligned_and_clear_of_the_kernel_pages() {
    let bases: BTreeSet<u64> = IMAGES.iter().map(|(_, l)| l.base).collect();
    assert_eq!(bases.len(), IMAGES.len(), "two images share a base");
    for (name, layout) in IMAGES {
        assert_eq!(layout.base % MIB, 0, "{name}: base not 1 MiB aligned");
        // Above the IPC buffer (0x100000) and the envelope page (0x110000).
        assert!(
            layout.base >= abi::ENVELOPE_VADDR + 4096,
            "{name}: base below the kernel's pages"
        );
        assert!(
            layout.stack > 0 && layout.stack % 16 == 0,
            "{name}: stack size"
        );
    }
}

#[test]
fn only_isolation_a_has_an_isolation_page_inside_its_own_megabyte() {
    for (name, layout) in IMAGES {
        match (*name, layout.isolation) {
            ("phase0-isolation-a", Some(address)) => {
                assert_eq!(address, abi::ISOLATION_A_DATA_VADDR);
                assert!(address > layout.base && address + ISOLATION_SIZE <= layout.base + MIB);
            }
            (_, None) => {}
            (name, isolation) => panic!("{name}: unexpected isolation {isolation:?}"),
        }
    }
}

#[test]
fn layout_of_finds_listed_images_only() {
    assert_eq!(layout_of("phase0-exit"), Some(at(0x100_0000)));
    assert_eq!(layout_of("procd").map(|l| l.stack), Some(64 * KIB));
    assert_eq!(layout_of("no-such-image"), None);
}

#[test]
fn defsyms_name_base_stack_and_the_isolation_page() {
    assert_eq!(
        defsyms(&at(0x100_0000)),
        [
            "-Wl,--defsym=IMAGE_BASE=0x1000000",
            "-Wl,--defsym=STACK_SIZE=0x4000",
        ]
    );
    let isolation_a = layout_of("phase0-isolation-a").unwrap();
    assert_eq!(
        defsyms(&isolation_a),
        [
            "-Wl,--defsym=IMAGE_BASE=0x1200000",
            "-Wl,--defsym=STACK_SIZE=0x4000",
            "-Wl,--defsym=ISOLATION_DATA=0x1210000",
            "-Wl,--defsym=ISOLATION_SIZE=0x1000",
        ]
    );
}
