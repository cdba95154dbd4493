//! Link the bench-compute image with linker/bench-compute.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("bench-compute");
}
