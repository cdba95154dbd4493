//! Link the phase0-isolation-a image with linker/phase0-isolation-a.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase0-isolation-a");
}
