//! Fuzzing audit-record decoding with proptest (bounded, runs in CI): arbitrary bytes and
//! arbitrary JSON shapes go through `SignalProcessingAudit` deserialisation, `validate`
//! and Data Storage's own decoders without a panic, and every valid record survives the
//! round trip (encode, decode, the decoders) unchanged.

use audit_guard::audit::{AuditStatus, ProcessingPhase, SignalProcessingAudit, Trigger};
use audit_guard::datastorage::http::{decode_batch, decode_single};
use audit_guard::duration::GoDuration;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

const KEYS: &[&str] = &[
    "id",
    "remediation_id",
    "signal_fingerprint",
    "processing_phases",
    "phase",
    "start_time",
    "end_time",
    "duration",
    "enrichmentResults",
    "classificationResults",
    "categorizationResults",
    "contextQuality",
    "priorityScore",
    "enrichment_quality",
    "enrichment_sources",
    "context_size_bytes",
    "environment",
    "confidence",
    "priority",
    "priority_score",
    "routing_priority",
    "completed_at",
    "status",
    "error_message",
    "trigger",
    "deleted_at",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        Just(json!("2025-11-27T10:00:00Z")),
        Just(json!("1.5s")),
        Just(json!("-1h")),
        Just(json!("9999999999h")),
        Just(json!("completed")),
        Just(json!("forced")),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), "[a-z_]{1,8}"],
                inner,
                0..10
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid record's object with some keys replaced by arbitrary values: close to valid, so
/// the deeper paths (durations, timestamps, validation) are reached.
fn mutated_record() -> impl Strategy<Value = Value> {
    (
        valid_record(),
        prop::collection::vec((prop::sample::select(KEYS), any_json()), 0..4),
    )
        .prop_map(|(rec, edits)| {
            let mut v = serde_json::to_value(rec).expect("encode");
            for (key, value) in edits {
                if matches!(key, "phase" | "duration" | "start_time" | "end_time") {
                    if let Some(first) = v["processing_phases"].get_mut(0).and_then(Value::as_object_mut) {
                        first.insert(key.to_string(), value);
                    }
                } else {
                    v[key] = value;
                }
            }
            v
        })
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000..2100, whole microseconds: what PostgreSQL keeps.
    (946_684_800i64..4_102_444_800, 0u32..1_000_000).prop_map(|(s, us)| Utc.timestamp_opt(s, us * 1000).single().expect("in range"))
}

/// Fractions with two decimals in [0, 1]: exact through JSON text.
fn unit() -> impl Strategy<Value = f64> {
    (0u32..=100).prop_map(|k| k as f64 / 100.0)
}

fn phase() -> impl Strategy<Value = ProcessingPhase> {
    (
        prop::sample::select(&["enriching", "classifying", "categorizing"][..]),
        prop::option::of(time()),
        0i64..86_400_000_000_000,
        any::<bool>(),
    )
        .prop_map(|(name, start, nanos, has_duration)| ProcessingPhase {
            phase: name.to_string(),
            start_time: start,
            end_time: start.map(|s| s + chrono::Duration::nanoseconds(nanos / 1000 * 1000)),
            duration: has_duration.then(|| GoDuration::from_nanos(nanos)),
            enrichment_results: None,
            classification_results: None,
            categorization_results: None,
        })
}

fn valid_record() -> impl Strategy<Value = SignalProcessingAudit> {
    let ids = "[A-Za-z0-9._:-]{1,64}";
    (
        (ids, "[a-z0-9-]{1,20}", ".{0,20}", prop::collection::vec(phase(), 0..4)),
        (prop::option::of(unit()), prop::option::of(unit()), prop::option::of(0i64..1000)),
        (
            prop::option::of(prop::sample::select(&["production", "staging", "development"][..])),
            prop::option::of(prop::sample::select(&["P0", "P1", "P2", "P3"][..])),
        ),
        (
            time(),
            prop::sample::select(
                &[
                    AuditStatus::Completed,
                    AuditStatus::Failed,
                    AuditStatus::Incomplete,
                    AuditStatus::Forced,
                ][..],
            ),
            prop::option::of(".{1,20}"),
            prop::option::of(prop::sample::select(&[Trigger::Completion, Trigger::Deletion, Trigger::Forced][..])),
            prop::option::of(time()),
        ),
    )
        .prop_map(
            |((id, rr, fp, phases), (quality, confidence, score), (env, priority), (completed_at, status, error, trigger, deleted_at))| {
                SignalProcessingAudit {
                    id: id.clone(),
                    remediation_id: rr,
                    signal_fingerprint: fp,
                    processing_phases: phases,
                    enrichment_quality: quality,
                    enrichment_sources: quality.map(|_| vec!["kubernetes".into()]),
                    context_size_bytes: score.map(|s| s * 10),
                    environment: env.map(str::to_string),
                    confidence,
                    business_criticality: None,
                    sla_requirement: None,
                    priority: priority.map(str::to_string),
                    priority_score: score,
                    routed_to_service: None,
                    routing_priority: None,
                    completed_at,
                    status,
                    error_message: error,
                    namespace: Some("ns".into()),
                    name: Some("sp".into()),
                    uid: Some(id),
                    trigger,
                    deleted_at,
                    anomalies: Vec::new(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(rec) = serde_json::from_slice::<SignalProcessingAudit>(&bytes) {
            let _ = rec.validate();
        }
        let _ = decode_single(&bytes);
        let _ = decode_batch(&bytes, 10);
    }

    #[test]
    fn arbitrary_json_never_panics(v in any_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(rec) = serde_json::from_value::<SignalProcessingAudit>(v.clone()) {
            let _ = rec.validate();
        }
        let _ = decode_single(&bytes);
        let _ = decode_batch(&serde_json::to_vec(&json!([v])).unwrap(), 10);
    }

    #[test]
    fn nearly_valid_records_never_panic_and_errors_name_a_field(v in mutated_record()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        match serde_json::from_value::<SignalProcessingAudit>(v.clone()) {
            Ok(rec) => {
                if let Err(e) = rec.validate() {
                    prop_assert!(!e.field.is_empty());
                    prop_assert!(decode_single(&bytes).is_err());
                }
            }
            Err(_) => prop_assert!(decode_single(&bytes).is_err()),
        }
        let _ = decode_batch(&serde_json::to_vec(&json!([v.clone(), v])).unwrap(), 10);
    }

    #[test]
    fn valid_records_round_trip(rec in valid_record()) {
        prop_assert_eq!(rec.validate(), Ok(()));
        let text = serde_json::to_vec(&rec).unwrap();
        let back: SignalProcessingAudit = serde_json::from_slice(&text).unwrap();
        prop_assert_eq!(&back, &rec);
        let prepared = decode_single(&text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&prepared.rec, &rec);
        // What Data Storage stores and returns decodes to the same record.
        let stored: SignalProcessingAudit = serde_json::from_str(&prepared.record_text).unwrap();
        prop_assert_eq!(&stored, &rec);
        let batch = decode_batch(&serde_json::to_vec(&vec![&rec]).unwrap(), 10).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&batch[0].rec, &rec);
        // Go duration strings are accepted for every phase duration and mean the same.
        let mut v = serde_json::to_value(&rec).unwrap();
        for p in v["processing_phases"].as_array_mut().unwrap() {
            if let Some(n) = p["duration"].as_i64() {
                p["duration"] = json!(format!("{n}ns"));
            }
        }
        let from_strings: SignalProcessingAudit = serde_json::from_value(v).unwrap();
        prop_assert_eq!(&from_strings, &rec);
    }
}
