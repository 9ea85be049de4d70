use super::markdown::{md, MD_LEADING, MD_SPECIAL};
use super::*;
use crate::evidence::rows::{AmendmentRow, ClaimListed, EventRow, RecordColumns, RecordRow};
use crate::evidence::verify::{Checked, Observer, Verdict, VerifyReport};
use chrono::{DateTime, Utc};
use serde_json::json;

#[test]
fn claims_are_counted_by_status_and_only_the_unconfirmed_ones_listed_as_claims() {
    let mut b = ReportBuilder::default();
    let claim = |id: &str, user: &str, status: &str| ClaimListed {
        json: serde_json::json!({"id": id, "user": user, "groups": ["audit-guard:break-glass"], "namespace": "ns",
            "name": "sp", "uid": format!("cr-{id}"), "at": "2026-01-01T10:00:00Z"}),
        at: "2026-01-01T10:00:00Z".parse().unwrap(),
        id: id.into(),
        status: status.into(),
    };
    b.claim(&claim("r-1", "not-a-real-user", "unconfirmed"));
    b.claim(&claim("r-2", "mallory", "ambiguous"));
    b.claim(&claim("r-3", "bob", "confirmed"));
    let r = b.finish(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
        chain(),
        &Default::default(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
    );
    let c = &r.break_glass_claims;
    assert_eq!((c.unconfirmed_total, c.ambiguous_total, c.confirmed_total), (1, 1, 1));
    let listed: Vec<(&str, &str)> = c.unconfirmed.iter().map(|e| (e.claimed_user.as_str(), e.status.as_str())).collect();
    assert_eq!(listed, [("not-a-real-user", "unconfirmed"), ("mallory", "ambiguous")]);
    assert_eq!(r.forced_removals.events_total, 0, "a claim is no event");
    let md = to_markdown(&r);
    assert!(
        md.contains("Break-glass claims (not evidence): 1 unconfirmed, 1 ambiguous, 1 confirmed"),
        "{md}"
    );
    // Every cell is escaped, times too (their colons render as colons).
    assert!(
        md.contains("| unconfirmed | 2026-01-01T10\\:00\\:00+00\\:00 | not-a-real-user |"),
        "{md}"
    );
    assert!(to_html(&r).contains("not-a-real-user"));
    // A report written before claims existed still reads.
    let mut v = serde_json::to_value(&r).unwrap();
    v.as_object_mut().unwrap().remove("break_glass_claims");
    let old: PeriodReport = serde_json::from_value(v).unwrap();
    assert_eq!(old.break_glass_claims, BreakGlassClaims::default());
}

fn chain() -> VerifyReport {
    VerifyReport {
        result: Verdict::Intact,
        verified_at: "2026-01-03T00:00:00Z".parse().unwrap(),
        since: None,
        until: None,
        retention_months: 0,
        chain_entries: 0,
        heads: vec![],
        checked: Checked::default(),
        expired_by_retention: 0,
        anchors_checked: 0,
        findings_total: 0,
        findings_by_problem: Default::default(),
        first_broken: None,
        findings: vec![],
    }
}

fn row(id: &str, status: &str, trigger: &str, env: &str, conf: f64, day: u32) -> RecordRow {
    let completed_at: DateTime<Utc> = format!("2026-01-0{day}T10:00:00Z").parse().unwrap();
    RecordRow {
        id: id.into(),
        record_text: "{}".into(),
        link: None,
        columns: RecordColumns {
            environment: Some(env.into()),
            confidence: Some(conf),
            priority: Some("P1".into()),
            priority_score: Some(60),
            routed_to_service: Some("ai-analysis".into()),
            routing_priority: Some(1),
            status: status.into(),
            namespace: Some("ns".into()),
            name: Some(format!("sp-{id}")),
            uid: Some(id.into()),
            trigger: Some(trigger.into()),
            deleted_at: (trigger == "deletion").then(|| completed_at + chrono::Duration::seconds(5)),
            stored_at: completed_at + chrono::Duration::seconds(7),
            ..RecordColumns::sample(completed_at)
        },
    }
}

#[test]
fn one_pass_counts_everything_by_day_and_value() {
    let mut b = ReportBuilder::default();
    b.record(&row("a", "completed", "completion", "production", 0.9, 1));
    b.record(&row("b", "completed", "deletion", "production", 0.7, 1));
    let mut forced = row("c", "forced", "forced", "staging", 0.5, 2);
    forced.columns.anomalies = Some(json!([{"field": "confidence", "value": 5}]));
    forced.columns.routed_to_service = None;
    b.record(&forced);
    let r = b.finish(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
        chain(),
        &Default::default(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
    );
    assert_eq!(r.records.total, 3);
    assert_eq!(r.records.by_status["completed"], 2);
    assert_eq!(r.records.by_trigger["forced"], 1);
    let prod = &r.classification_by_day[0];
    assert_eq!((prod.environment.as_deref(), prod.count), (Some("production"), 2));
    assert!((prod.avg_confidence.unwrap() - 0.8).abs() < 1e-9);
    assert_eq!(r.priority_by_day.len(), 2, "one priority on two days");
    assert_eq!(
        r.routing.by_service,
        vec![
            Count { value: None, count: 1 },
            Count {
                value: Some("ai-analysis".into()),
                count: 2
            }
        ]
    );
    assert_eq!(r.forced_removals.forced_records, 1);
    assert_eq!((r.anomalies.records, r.anomalies.by_field["confidence"]), (1, 1));
    assert_eq!(r.deletion_waits.deletions, 1);
    let longest = r.deletion_waits.longest.as_ref().unwrap();
    assert_eq!((longest.id.as_str(), longest.seconds), ("b", 2.0));
    assert_eq!(r.deletion_waits.histogram.iter().map(|b| b.count).sum::<u64>(), 1);
    let md = to_markdown(&r);
    assert!(md.contains("| completed | deletion | 1 |"), "{md}");
    let html = to_html(&r);
    assert!(html.contains("<svg") && html.contains(PALETTE[0]));
    assert!(
        !html.contains("http://") || html.matches("http://").count() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "nothing fetched from elsewhere"
    );
}

#[test]
fn amendments_name_what_changed_and_events_their_actor() {
    let mut b = ReportBuilder::default();
    let am = AmendmentRow {
        amendment_id: "am-1".into(),
        record_id: "a".into(),
        amended_at: "2026-01-02T00:00:00Z".parse().unwrap(),
        content_sha256: String::new(),
        record_text: json!({"id": "a", "status": "failed", "confidence": 0.9, "error_message": "x"}).to_string(),
        anomalies: None,
        link: None,
    };
    b.amendment(&am);
    b.amendment(&AmendmentRow {
        amendment_id: "am-2".into(),
        ..am.clone()
    });
    assert_eq!(b.amended_ids(), ["a"]);
    b.event(&EventRow {
        id: "rev".into(),
        user_name: "bob<script>".into(),
        groups: json!(["audit-guard:break-glass"]),
        namespace: "ns".into(),
        name: "sp".into(),
        uid: "u".into(),
        at: "2026-01-02T00:00:00Z".parse().unwrap(),
        stored_at: "2026-01-02T00:00:00Z".parse().unwrap(),
        event_text: String::new(),
        link: None,
    });
    let originals = [("a".to_string(), json!({"id": "a", "status": "completed", "confidence": 0.9}))].into();
    let r = b.finish(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
        chain(),
        &originals,
        "2026-01-03T00:00:00Z".parse().unwrap(),
    );
    assert_eq!((r.amendments.total, r.amendments.records_amended), (2, 1));
    assert_eq!(r.amendments.items[0].changed, ["error_message", "status"]);
    assert_eq!(r.forced_removals.by_user["bob<script>"], 1);
    let html = to_html(&r);
    assert!(html.contains("bob&lt;script&gt;") && !html.contains("bob<script>"));
}

/// Every character of [`MD_SPECIAL`] in `out`, and a leading [`MD_LEADING`] marker, is
/// preceded by an escaping backslash, and nothing in it breaks a line.
fn inert(out: &str) -> bool {
    if out.trim_start().starts_with(MD_LEADING) {
        return false;
    }
    let mut chars = out.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if !chars.next().is_some_and(|n| MD_SPECIAL.contains(&n) || MD_LEADING.contains(&n)) {
                return false;
            }
        } else if MD_SPECIAL.contains(&c) || c.is_control() {
            return false;
        }
    }
    true
}

const HOSTILE: &[&str] = &[
    "[click](https://evil.example/x)",
    "![img](https://evil.example/i.png)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "a|b|c",
    "line\n# heading\r\n---",
    "`code` and ``more``",
    "*bold* _em_ __strong__ ~~gone~~",
    "- item",
    "+ item",
    "  --- ",
    "===",
    "1. item",
    "> quote",
    "https://evil.example www.evil.example bob@evil.example",
    "&lt;b&gt; &#60;",
    "\\[escaped\\]",
    "tab\there",
    "$x^2$",
    "[ref]: https://evil.example",
    "bob\u{2028}# heading",
];

#[test]
fn hostile_text_is_inert_in_markdown_and_reads_back_as_itself() {
    for s in HOSTILE {
        let out = md(s);
        assert!(inert(&out), "{s:?} -> {out:?}");
        let mut back = String::new();
        let mut chars = out.chars();
        while let Some(c) = chars.next() {
            back.push(if c == '\\' { chars.next().unwrap() } else { c });
        }
        let expected: String = s.chars().map(|c| if c.is_control() || c == '\u{2028}' { ' ' } else { c }).collect();
        assert_eq!(back, expected, "the text itself is kept");
    }
    assert_eq!(md("team-a"), "team-a");
    assert_eq!(md("- item"), "\\- item");
    assert_eq!(md("  += x"), "  \\+= x");
    assert_eq!(md("(none)"), "(none)");
}

#[test]
fn a_hostile_actor_cannot_leave_its_cell_in_the_report() {
    let mut b = ReportBuilder::default();
    for (i, user) in HOSTILE.iter().enumerate() {
        b.event(&EventRow {
            id: format!("rev-{i}"),
            user_name: (*user).into(),
            groups: json!([user, "audit-guard:break-glass"]),
            namespace: format!("ns{user}"),
            name: (*user).into(),
            uid: "u".into(),
            at: "2026-01-02T00:00:00Z".parse().unwrap(),
            stored_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            event_text: String::new(),
            link: None,
        });
    }
    let r = b.finish(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
        chain(),
        &std::collections::HashMap::new(),
        "2026-01-03T00:00:00Z".parse().unwrap(),
    );
    let md = to_markdown(&r);
    let rows: Vec<&str> = md.lines().filter(|l| l.contains("| u |")).collect();
    assert_eq!(rows.len(), HOSTILE.len(), "one line per event:\n{md}");
    for row in rows {
        // What Markdown sees as syntax: the row without its escaped characters.
        let mut bare = String::new();
        let mut chars = row.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                chars.next();
            } else {
                bare.push(c);
            }
        }
        // Six cells: seven pipes; no link, image, HTML, code or emphasis left.
        assert_eq!(bare.matches('|').count(), 7, "{row}");
        for syntax in ['[', ']', '<', '>', '`', '*', '_', '!', '#', '&', '~'] {
            assert!(!bare.contains(syntax), "{syntax} unescaped in {row}");
        }
    }
    assert!(
        !md.contains("\n# heading") && !md.contains("\n- item") && !md.contains("\n1. item"),
        "{md}"
    );
}
