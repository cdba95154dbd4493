//! Link the phase1-lookup-client image with linker/phase1-lookup-client.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase1-lookup-client");
}
