//! Link the phase2-irq-client image with linker/phase2-irq-client.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase2-irq-client");
}
