//! Link the phase0-fault-kill image with linker/phase0-fault-kill.ld (see the imagelink crate).

fn main() {
    imagelink::link_image("phase0-fault-kill");
}
