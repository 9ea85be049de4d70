//! Fuzzing AdmissionReview decoding and the decisions with proptest (bounded, runs in CI):
//! no input panics, and the finalizer properties hold for any finalizer list.

use audit_guard::crd::FINALIZER;
use audit_guard::webhook::policy::{mutate, validate, Policy, Verdict};
use audit_guard::webhook::review::parse_review;
use proptest::prelude::*;
use serde_json::{json, Value};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!("CREATE")),
        Just(json!("DELETE")),
        Just(json!(FINALIZER)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("finalizers".to_string()),
                    Just("deletionTimestamp".to_string()),
                    Just("spec".to_string()),
                    Just("status".to_string()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn policy() -> Policy {
    Policy {
        controller_identity: "ctrl".into(),
        break_glass_group: "bg".into(),
    }
}

fn envelope(op: Value, object: Value, old: Value, user: Value, dry_run: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u", "operation": op, "dryRun": dry_run, "userInfo": user,
            "kind": { "group": "kubernaut.ai", "version": "v1alpha1", "kind": "SignalProcessing" },
            "object": object, "oldObject": old
        }
    })
}

fn object(finalizers: &[String], deleting: bool) -> Value {
    let mut meta = json!({ "name": "x", "uid": "u-1", "finalizers": finalizers });
    if deleting {
        meta["deletionTimestamp"] = json!("2025-11-27T10:00:00Z");
    }
    json!({ "apiVersion": "kubernaut.ai/v1alpha1", "kind": "SignalProcessing", "metadata": meta, "spec": {} })
}

fn finalizer_list() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof![Just(FINALIZER.to_string()), "[a-z]{1,5}/[a-z]{1,5}"], 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_review(&bytes);
    }

    #[test]
    fn arbitrary_review_shapes_never_panic(op in any_json(), obj in any_json(), old in any_json(), user in any_json(), dry in any_json()) {
        let body = serde_json::to_vec(&envelope(op, obj, old, user, dry)).unwrap();
        if let Ok(review) = parse_review(&body) {
            let _ = mutate(&review);
            let _ = validate(&review, &policy());
        }
    }

    #[test]
    fn mutation_leaves_exactly_one_finalizer_and_keeps_the_others(fins in finalizer_list(), update in any::<bool>()) {
        prop_assume!(fins.iter().filter(|f| *f == FINALIZER).count() <= 1);
        let obj = object(&fins, false);
        let op = if update { "UPDATE" } else { "CREATE" };
        let review = parse_review(&serde_json::to_vec(&envelope(json!(op), obj.clone(), obj.clone(), json!({}), json!(false))).unwrap()).unwrap();
        let mut patched = obj.clone();
        if let Some(patch) = mutate(&review) {
            json_patch::patch(&mut patched, &patch).unwrap();
        }
        let after: Vec<String> = serde_json::from_value(patched["metadata"]["finalizers"].clone()).unwrap();
        prop_assert_eq!(after.iter().filter(|f| *f == FINALIZER).count(), 1);
        let others: Vec<&String> = after.iter().filter(|f| *f != FINALIZER).collect();
        prop_assert_eq!(others, fins.iter().filter(|f| *f != FINALIZER).collect::<Vec<_>>());
        // Reinvocation on the patched object changes nothing.
        let again = parse_review(&serde_json::to_vec(&envelope(json!(op), patched.clone(), obj, json!({}), json!(false))).unwrap()).unwrap();
        prop_assert!(mutate(&again).is_none());
    }

    #[test]
    fn no_one_takes_the_finalizer_off_a_deleting_object_unchecked(
        old in finalizer_list(), new in finalizer_list(), user in prop_oneof![Just("ctrl"), Just("alice")],
        break_glass in any::<bool>(), dry in any::<bool>(),
    ) {
        let groups = if break_glass { vec!["bg"] } else { vec!["other"] };
        let body = envelope(json!("UPDATE"), object(&new, true), object(&old, true), json!({"username": user, "groups": groups}), json!(dry));
        let verdict = validate(&parse_review(&serde_json::to_vec(&body).unwrap()).unwrap(), &policy());
        let removes = old.iter().any(|f| f == FINALIZER) && !new.iter().any(|f| f == FINALIZER);
        let denied = matches!(verdict, Verdict::Deny { .. });
        prop_assert_eq!(denied, removes && user != "ctrl" && !break_glass);
        prop_assert_eq!(verdict == Verdict::RecordBreakGlassThenAllow, removes && user != "ctrl" && break_glass && !dry);
        // The controller's identity is never simply allowed: Data Storage must hold the record.
        prop_assert_eq!(verdict == Verdict::AllowIfRecordHeld, removes && user == "ctrl");
    }
}
