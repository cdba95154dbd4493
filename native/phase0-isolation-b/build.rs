//! Link the phase0-isolation-b image with linker/phase0-isolation-b.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase0-isolation-b");
}
