//! Link the procd image with linker/procd.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("procd");
}
