//! procd's startup: the envelope and intake checks, READY.

use super::*;

#[test]
fn startup_accepts_and_notifies_ready() {
    let mut k = Model::new();
    let p = start(&mut k, Some(&procd_envelope())).expect("starts");
    assert_eq!(k.log, ["procd: envelope accepted"]);
    assert_eq!(k.notified, [(NOTIFY, notify_bit::READY)]);
    assert_eq!(p.self_endpoint(), SELF_EP);
    assert_eq!(p.table().live().count(), 0);
}

#[test]
fn startup_refuses_a_null_envelope() {
    let mut k = Model::new();
    assert_eq!(
        start(&mut k, None).map(|_| ()),
        Err(startup_status::ENVELOPE_NULL)
    );
    assert_eq!(k.log, ["procd: startup refused: ENVELOPE_NULL"]);
    assert!(k.notified.is_empty());
}

#[test]
fn startup_refuses_bad_envelopes_by_name() {
    let mut bad_magic = procd_envelope();
    bad_magic[0] ^= 0xFF;
    let mut other_role = procd_envelope();
    write_u16(&mut other_role, abi::envelope_header::ROLE, role::TEST);
    let cases: [(&[u8], u64, &str); 3] = [
        (&bad_magic, startup_status::BAD_MAGIC, "BAD_MAGIC"),
        (&other_role, startup_status::BAD_ROLE, "BAD_ROLE"),
        (&[1, 2, 3], startup_status::BAD_LENGTH, "BAD_LENGTH"),
    ];
    for (bytes, code, name) in cases {
        let mut k = Model::new();
        assert_eq!(start(&mut k, Some(bytes)).map(|_| ()), Err(code));
        assert_eq!(k.log, [format!("procd: startup refused: {name}")]);
        assert!(k.notified.is_empty());
    }
}

#[test]
fn startup_refuses_a_bad_intake() {
    // Missing kernel control purpose.
    let mut k = Model::new();
    let env = envelope_bytes(&[
        (SELF_EP, cap_purpose::SELF_ENDPOINT),
        (NOTIFY, cap_purpose::BOOTSTRAP_NOTIFY),
    ]);
    assert_eq!(
        start(&mut k, Some(&env)).map(|_| ()),
        Err(startup_status::INTAKE_MISSING)
    );
    assert_eq!(k.log, ["procd: startup refused: INTAKE_MISSING"]);

    // Kernel control without SPAWN.
    let mut k = Model::new();
    k.caps.insert(KC, (cap_type::KERNEL_CONTROL, rights::SEND));
    assert_eq!(
        start(&mut k, Some(&procd_envelope())).map(|_| ()),
        Err(startup_status::INTAKE_RIGHTS)
    );
    assert_eq!(k.log, ["procd: startup refused: INTAKE_RIGHTS"]);

    // Notification slot holding an endpoint.
    let mut k = Model::new();
    k.caps.insert(NOTIFY, (cap_type::ENDPOINT, rights::SEND));
    assert_eq!(
        start(&mut k, Some(&procd_envelope())).map(|_| ()),
        Err(startup_status::INTAKE_WRONG_TYPE)
    );

    // Empty self-endpoint slot.
    let mut k = Model::new();
    k.caps.remove(&SELF_EP);
    assert_eq!(
        start(&mut k, Some(&procd_envelope())).map(|_| ()),
        Err(startup_status::INTAKE_MISSING)
    );
}
