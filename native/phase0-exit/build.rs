//! Link the phase0-exit image with linker/phase0-exit.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase0-exit");
}
