//! Link the phase0-deep-fault image with linker/image.ld and its layout (see the imagelink crate).

fn main() {
    imagelink::link_image();
}
