//! Link the svc-stub image with linker/svc-stub.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("svc-stub");
}
