//! Link the phase1-time-client image with linker/phase1-time-client.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase1-time-client");
}
