use super::*;
use abi::{CAP_TABLE_SLOTS, cap_type, rights, role};
use bootstrap::EnvelopeBuilder;

fn envelope(role: u16, slots: &[(u32, u16)]) -> Envelope {
    let mut b = EnvelopeBuilder::new(role, 0).expect("role");
    for &(slot, purpose) in slots {
        b.push(slot, purpose).expect("slot");
    }
    b.envelope()
}

/// A procd envelope: self endpoint 1, kernel control 2, bootstrap notify 3, crashd 5.
fn procd_env() -> Envelope {
    envelope(
        role::PROCD,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (2, cap_purpose::KERNEL_CONTROL),
            (3, cap_purpose::BOOTSTRAP_NOTIFY),
            (5, cap_purpose::CRASHD_ENDPOINT),
        ],
    )
}

/// The capability table procd_env() describes.
fn procd_caps(slot: u32) -> Option<(u32, u32)> {
    match slot {
        1 => Some((cap_type::ENDPOINT, rights::RECV)),
        2 => Some((cap_type::KERNEL_CONTROL, rights::SEND | rights::SPAWN)),
        3 => Some((cap_type::NOTIFICATION, rights::SEND)),
        5 => Some((cap_type::ENDPOINT, rights::SEND | rights::GRANT)),
        _ => None,
    }
}

fn with(slot: u32, cap: Option<(u32, u32)>) -> impl FnMut(u32) -> Option<(u32, u32)> {
    move |s| if s == slot { cap } else { procd_caps(s) }
}

#[test]
fn intake_accepts_a_complete_table() {
    assert_eq!(
        validate_intake(&procd_env(), role::PROCD, procd_caps),
        Ok(())
    );
}

#[test]
fn intake_accepts_extra_rights() {
    let caps = with(1, Some((cap_type::ENDPOINT, rights::ALL)));
    assert_eq!(validate_intake(&procd_env(), role::PROCD, caps), Ok(()));
}

#[test]
fn intake_missing_purpose_or_empty_slot() {
    let env = envelope(
        role::PROCD,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (3, cap_purpose::BOOTSTRAP_NOTIFY),
        ],
    );
    assert_eq!(
        validate_intake(&env, role::PROCD, procd_caps),
        Err(startup_status::INTAKE_MISSING)
    );
    assert_eq!(
        validate_intake(&procd_env(), role::PROCD, with(3, None)),
        Err(startup_status::INTAKE_MISSING)
    );
}

#[test]
fn intake_wrong_type() {
    let caps = with(2, Some((cap_type::ENDPOINT, rights::SEND | rights::SPAWN)));
    assert_eq!(
        validate_intake(&procd_env(), role::PROCD, caps),
        Err(startup_status::INTAKE_WRONG_TYPE)
    );
}

#[test]
fn intake_rights() {
    let caps = with(2, Some((cap_type::KERNEL_CONTROL, rights::SEND)));
    assert_eq!(
        validate_intake(&procd_env(), role::PROCD, caps),
        Err(startup_status::INTAKE_RIGHTS)
    );
}

#[test]
fn optional_entries_are_checked_when_present() {
    // crashd endpoint (optional) present: wrong type, missing right, empty slot.
    let cases = [
        (
            Some((cap_type::NOTIFICATION, rights::SEND)),
            startup_status::INTAKE_WRONG_TYPE,
        ),
        (
            Some((cap_type::ENDPOINT, rights::RECV)),
            startup_status::INTAKE_RIGHTS,
        ),
        (None, startup_status::INTAKE_MISSING),
    ];
    for (cap, want) in cases {
        assert_eq!(
            validate_intake(&procd_env(), role::PROCD, with(5, cap)),
            Err(want)
        );
    }
    // Absent from the envelope: fine.
    let env = envelope(
        role::PROCD,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (2, cap_purpose::KERNEL_CONTROL),
            (3, cap_purpose::BOOTSTRAP_NOTIFY),
        ],
    );
    assert_eq!(validate_intake(&env, role::PROCD, procd_caps), Ok(()));
}

#[test]
fn intake_reports_the_first_failing_entry_in_spec_order() {
    // Self endpoint has the wrong type and kernel control is missing: the self endpoint
    // entry comes first in the PROCD spec.
    let env = envelope(
        role::PROCD,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (3, cap_purpose::BOOTSTRAP_NOTIFY),
        ],
    );
    let caps = with(1, Some((cap_type::NOTIFICATION, rights::RECV)));
    assert_eq!(
        validate_intake(&env, role::PROCD, caps),
        Err(startup_status::INTAKE_WRONG_TYPE)
    );
}

#[test]
fn intake_asks_only_about_listed_slots() {
    let mut asked = Vec::new();
    let env = procd_env();
    let _ = validate_intake(&env, role::PROCD, |s| {
        asked.push(s);
        procd_caps(s)
    });
    assert_eq!(asked, vec![1, 2, 3, 5]);
}

#[test]
fn generic_role_requires_nothing() {
    let env = envelope(role::GENERIC, &[]);
    assert_eq!(validate_intake(&env, role::GENERIC, |_| None), Ok(()));
}

#[test]
fn plan_for_a_test_child() {
    // TEST: self endpoint (kernel-made), optional bootstrap notify SEND, optional kernel
    // control SEND.
    let plan = plan_child_grants(role::TEST, &procd_env()).expect("plan");
    assert_eq!(
        plan.grants(),
        &[
            Grant {
                src_slot: 3,
                rights: rights::SEND,
                child_slot: CHILD_FIRST_GRANT_SLOT,
                purpose: cap_purpose::BOOTSTRAP_NOTIFY,
            },
            Grant {
                src_slot: 2,
                rights: rights::SEND,
                child_slot: CHILD_FIRST_GRANT_SLOT + 1,
                purpose: cap_purpose::KERNEL_CONTROL,
            },
        ]
    );
    // Kernel control: procd holds SEND|SPAWN, the child gets SEND only.
    let mut word = [0u8; 8];
    assert!(plan.grants()[1].write(&mut word));
    assert_eq!(
        u64::from_le_bytes(word),
        2 | (u64::from(rights::SEND) << 32),
        "a grants[i] word is src_slot | rights << 32"
    );
    assert!(!plan.grants()[1].write(&mut word[..7]));
    let mut buf = [SlotEntry::default(); ENVELOPE_MAX_SLOTS];
    let slots = plan.envelope_slots(&mut buf);
    assert_eq!(
        slots,
        &[
            SlotEntry {
                slot: CHILD_SELF_ENDPOINT_SLOT,
                purpose: cap_purpose::SELF_ENDPOINT,
            },
            SlotEntry {
                slot: CHILD_FIRST_GRANT_SLOT,
                purpose: cap_purpose::BOOTSTRAP_NOTIFY,
            },
            SlotEntry {
                slot: CHILD_FIRST_GRANT_SLOT + 1,
                purpose: cap_purpose::KERNEL_CONTROL,
            },
        ]
    );
}

#[test]
fn planned_child_envelope_passes_the_childs_own_checks() {
    for child in [role::TEST, role::TIMED, role::NAMED, role::MEMD] {
        let plan = plan_child_grants(child, &procd_env()).expect("plan");
        let mut buf = [SlotEntry::default(); ENVELOPE_MAX_SLOTS];
        let mut b = EnvelopeBuilder::new(child, 0).expect("role");
        for s in plan.envelope_slots(&mut buf) {
            b.push(s.slot, s.purpose).expect("valid slot record");
        }
        let env = b.envelope();
        // The child's table as the kernel would build it from the plan.
        let table = |slot: u32| {
            if slot == CHILD_SELF_ENDPOINT_SLOT {
                return Some((cap_type::ENDPOINT, rights::RECV));
            }
            let g = plan.grants().iter().find(|g| g.child_slot == slot)?;
            let (t, _) = procd_caps(g.src_slot)?;
            Some((t, g.rights))
        };
        assert_eq!(validate_intake(&env, child, table), Ok(()), "role {child}");
        assert!(plan.grants().iter().all(|g| g.child_slot < CAP_TABLE_SLOTS));
    }
}

#[test]
fn plan_skips_missing_optional_and_denies_missing_required() {
    // Parent without kernel control: TEST (optional) is fine, TIMED (required) is denied.
    let parent = envelope(
        role::PROCD,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (3, cap_purpose::BOOTSTRAP_NOTIFY),
        ],
    );
    let plan = plan_child_grants(role::TEST, &parent).expect("plan");
    assert_eq!(plan.grants().len(), 1);
    assert_eq!(plan.grants()[0].purpose, cap_purpose::BOOTSTRAP_NOTIFY);
    assert_eq!(plan_child_grants(role::TIMED, &parent), Err(status::DENIED));
}

#[test]
fn plan_never_grants_self_endpoint_or_wider_rights() {
    let plan = plan_child_grants(role::TIMED, &procd_env()).expect("plan");
    assert!(
        plan.grants()
            .iter()
            .all(|g| g.purpose != cap_purpose::SELF_ENDPOINT)
    );
    for g in plan.grants() {
        let spec = intake::for_role(role::TIMED)
            .iter()
            .find(|e| e.purpose == g.purpose)
            .expect("granted purposes come from the spec");
        assert_eq!(g.rights, spec.rights);
    }
}

#[test]
fn plan_overflow_is_internal() {
    let entry = |purpose| IntakeEntry {
        purpose,
        cap_type: cap_type::ENDPOINT,
        rights: rights::SEND,
        required: false,
    };
    let spec = [entry(cap_purpose::CRASHD_ENDPOINT); CREATE_MAX_GRANTS + 1];
    assert_eq!(plan_from_spec(&spec, &procd_env()), Err(status::INTERNAL));
    let spec = [entry(cap_purpose::CRASHD_ENDPOINT); CREATE_MAX_GRANTS];
    assert_eq!(
        plan_from_spec(&spec, &procd_env()).map(|p| p.grants().len()),
        Ok(CREATE_MAX_GRANTS)
    );
}

/// procd_env() plus a capability for PROCD_ENDPOINT in slot 9 (procd never lists one; a parent
/// that did must still not pass it on).
fn parent_with_procd_endpoint() -> Envelope {
    envelope(
        role::PROCD,
        &[
            (1, cap_purpose::SELF_ENDPOINT),
            (2, cap_purpose::KERNEL_CONTROL),
            (3, cap_purpose::BOOTSTRAP_NOTIFY),
            (5, cap_purpose::CRASHD_ENDPOINT),
            (9, cap_purpose::PROCD_ENDPOINT),
        ],
    )
}

#[test]
fn plan_leaves_procd_endpoint_to_the_spawner() {
    // TEST lists PROCD_ENDPOINT (optional): the planner never grants it, even from a parent
    // whose envelope lists one.
    assert!(intake_entry(role::TEST, cap_purpose::PROCD_ENDPOINT).is_some());
    for parent in [procd_env(), parent_with_procd_endpoint()] {
        let plan = plan_child_grants(role::TEST, &parent).expect("plan");
        assert!(
            plan.grants()
                .iter()
                .all(|g| g.purpose != cap_purpose::PROCD_ENDPOINT && g.src_slot != 9)
        );
        assert_eq!(plan.grants().len(), 2);
    }
}

#[test]
fn a_required_procd_endpoint_is_not_denied_by_the_planner() {
    // Required entries the parent lacks are DENIED, but PROCD_ENDPOINT is the spawner's to add.
    let entry = |purpose, required| IntakeEntry {
        purpose,
        cap_type: cap_type::ENDPOINT,
        rights: rights::SEND,
        required,
    };
    let spec = [
        entry(cap_purpose::SELF_ENDPOINT, true),
        entry(cap_purpose::PROCD_ENDPOINT, true),
        entry(cap_purpose::CRASHD_ENDPOINT, true),
    ];
    let plan = plan_from_spec(&spec, &procd_env()).expect("plan");
    assert_eq!(plan.grants().len(), 1);
    assert_eq!(plan.grants()[0].purpose, cap_purpose::CRASHD_ENDPOINT);
    let plan = plan_from_spec(&spec, &parent_with_procd_endpoint()).expect("plan");
    assert_eq!(plan.grants().len(), 1);
}

#[test]
fn intake_entry_finds_listed_purposes_only() {
    let e = intake_entry(role::TEST, cap_purpose::PROCD_ENDPOINT).expect("listed");
    assert_eq!(
        (e.cap_type, e.rights, e.required),
        (cap_type::ENDPOINT, rights::SEND, false)
    );
    assert!(intake_entry(role::TIMED, cap_purpose::PROCD_ENDPOINT).is_none());
    assert!(intake_entry(role::PROCD, cap_purpose::PROCD_ENDPOINT).is_none());
    assert!(intake_entry(role::GENERIC, cap_purpose::PROCD_ENDPOINT).is_none());
    assert!(intake_entry(role::TIMED, cap_purpose::KERNEL_CONTROL).is_some_and(|e| e.required));
}

#[test]
fn push_appends_after_the_planned_grants() {
    let mut plan = plan_child_grants(role::TEST, &procd_env()).expect("plan");
    assert_eq!(
        plan.push(40, rights::SEND, cap_purpose::PROCD_ENDPOINT),
        Ok(CHILD_FIRST_GRANT_SLOT + 2)
    );
    assert_eq!(
        plan.grants().last(),
        Some(&Grant {
            src_slot: 40,
            rights: rights::SEND,
            child_slot: CHILD_FIRST_GRANT_SLOT + 2,
            purpose: cap_purpose::PROCD_ENDPOINT,
        })
    );
    let mut buf = [SlotEntry::default(); ENVELOPE_MAX_SLOTS];
    let slots = plan.envelope_slots(&mut buf);
    assert_eq!(slots.len(), 4);
    assert_eq!(
        slots[3],
        SlotEntry {
            slot: CHILD_FIRST_GRANT_SLOT + 2,
            purpose: cap_purpose::PROCD_ENDPOINT,
        }
    );

    // The child built from the plan (the minted capability: an ENDPOINT with SEND) passes its
    // own intake check.
    let mut b = EnvelopeBuilder::new(role::TEST, 0).expect("role");
    for s in slots {
        b.push(s.slot, s.purpose).expect("valid slot record");
    }
    let table = |slot: u32| {
        if slot == CHILD_SELF_ENDPOINT_SLOT {
            return Some((cap_type::ENDPOINT, rights::RECV));
        }
        let g = plan.grants().iter().find(|g| g.child_slot == slot)?;
        let (t, _) = procd_caps(g.src_slot).unwrap_or((cap_type::ENDPOINT, 0));
        Some((t, g.rights))
    };
    assert_eq!(validate_intake(&b.envelope(), role::TEST, table), Ok(()));
}

#[test]
fn push_refuses_duplicates_self_endpoint_and_overflow() {
    let mut plan = plan_child_grants(role::TEST, &procd_env()).expect("plan");
    let before = plan;
    assert_eq!(
        plan.push(40, rights::SEND, cap_purpose::KERNEL_CONTROL),
        Err(status::INTERNAL)
    );
    assert_eq!(
        plan.push(40, rights::SEND, cap_purpose::SELF_ENDPOINT),
        Err(status::INTERNAL)
    );
    assert_eq!(plan, before);

    let entry = |purpose| IntakeEntry {
        purpose,
        cap_type: cap_type::ENDPOINT,
        rights: rights::SEND,
        required: false,
    };
    let spec = [entry(cap_purpose::CRASHD_ENDPOINT); CREATE_MAX_GRANTS];
    let mut full = plan_from_spec(&spec, &procd_env()).expect("plan");
    let before = full;
    assert_eq!(
        full.push(40, rights::SEND, cap_purpose::PROCD_ENDPOINT),
        Err(status::INTERNAL)
    );
    assert_eq!(full, before);
    let spec = [entry(cap_purpose::CRASHD_ENDPOINT); CREATE_MAX_GRANTS - 1];
    let mut almost = plan_from_spec(&spec, &procd_env()).expect("plan");
    assert_eq!(
        almost.push(40, rights::SEND, cap_purpose::PROCD_ENDPOINT),
        Ok(CHILD_FIRST_GRANT_SLOT + CREATE_MAX_GRANTS as u32 - 1)
    );
    assert_eq!(almost.grants().len(), CREATE_MAX_GRANTS);
}
