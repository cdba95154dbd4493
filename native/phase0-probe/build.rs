//! Link the phase0-probe image with linker/phase0-probe.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase0-probe");
}
