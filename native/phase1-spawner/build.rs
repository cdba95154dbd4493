//! Link the phase1-spawner image with linker/phase1-spawner.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase1-spawner");
}
