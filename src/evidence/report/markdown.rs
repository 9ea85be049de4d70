//! The period report as Markdown: every text a user or a CR supplied made inert.

use super::model::*;
use super::table::*;

/// ASCII punctuation that means something to Markdown (CommonMark and GitHub's extensions)
/// wherever it stands in a line: code, emphasis, links and images, HTML and entities, headings,
/// quote markers, ordered-list dots, tables, strikethrough, math, and the bare autolinks
/// (`scheme:`, `www.`, `user@host`). CommonMark renders any escaped ASCII punctuation as itself.
pub(super) const MD_SPECIAL: &[char] = &[
    '\\', '`', '*', '_', '{', '}', '[', ']', '<', '>', '#', '.', '!', '|', '~', '&', ':', '@', '$',
];

/// Markers that mean something only at the start of a line (a bullet, a setext underline, a
/// thematic break): escaped there, left alone inside words such as `team-a`.
pub(super) const MD_LEADING: &[char] = &['-', '+', '='];

/// Text from a user or a CR's status, made inert for a Markdown table cell or line: each
/// character of [`MD_SPECIAL`] backslash-escaped, a leading [`MD_LEADING`] marker too, control
/// characters (line breaks, tabs) turned into spaces, so it can neither start a construct nor
/// leave its cell or line.
pub(super) fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    let mut leading = true;
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.push(' ');
            continue;
        }
        if MD_SPECIAL.contains(&c) || (leading && MD_LEADING.contains(&c)) {
            out.push('\\');
        }
        out.push(c);
        leading &= c == ' ';
    }
    out
}

pub fn to_markdown(r: &PeriodReport) -> String {
    let mut o = String::new();
    let line = |o: &mut String, s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(
        &mut o,
        format!("# Audit report {} – {}\n", r.since.to_rfc3339(), r.until.to_rfc3339()),
    );
    line(&mut o, format!("Generated {} by Data Storage. Period: `since` inclusive, `until` exclusive, on each entry's own time (records: when Data Storage stored them, stored_at; their days: completed_at).\n", r.generated_at.to_rfc3339()));
    line(&mut o, "## Chain verification\n".into());
    line(&mut o, format!("**{}**\n", md(&r.chain.summary())));
    for f in r.chain.findings.iter().take(20) {
        line(
            &mut o,
            format!(
                "- {:?} {} {} — {}",
                f.problem,
                f.kind.map_or("", |k| k.as_str()),
                md(f.id.as_deref().unwrap_or("")),
                md(&f.detail)
            ),
        );
    }
    line(&mut o, format!("\n## Records ({})\n", r.records.total));
    line(&mut o, "| status | trigger | records |\n|---|---|---|".into());
    for st in &r.records.by_status_and_trigger {
        line(
            &mut o,
            format!("| {} | {} | {} |", md(&st.status), md(&label(&st.trigger)), st.count),
        );
    }
    line(&mut o, "\n## Classification by environment, per day\n".into());
    line(&mut o, "| day | environment | records | avg confidence |\n|---|---|---|---|".into());
    for c in &r.classification_by_day {
        line(
            &mut o,
            format!(
                "| {} | {} | {} | {} |",
                c.day,
                md(&label(&c.environment)),
                c.count,
                fmt_opt(c.avg_confidence, 3)
            ),
        );
    }
    line(&mut o, "\n## Priority distribution, per day\n".into());
    line(&mut o, "| day | priority | records | avg score |\n|---|---|---|---|".into());
    for p in &r.priority_by_day {
        line(
            &mut o,
            format!(
                "| {} | {} | {} | {} |",
                p.day,
                md(&label(&p.priority)),
                p.count,
                fmt_opt(p.avg_score, 1)
            ),
        );
    }
    line(&mut o, "\n## Routing decisions\n".into());
    line(&mut o, "| routed_to_service | records |\n|---|---|".into());
    for c in &r.routing.by_service {
        line(&mut o, format!("| {} | {} |", md(&label(&c.value)), c.count));
    }
    line(&mut o, "\n| routing_priority | records |\n|---|---|".into());
    for c in &r.routing.by_priority {
        line(
            &mut o,
            format!("| {} | {} |", c.value.map_or("(none)".into(), |v| v.to_string()), c.count),
        );
    }
    let f = &r.forced_removals;
    line(
        &mut o,
        format!(
            "\n## Forced removals (break-glass): {} events, {} forced records\n",
            f.events_total, f.forced_records
        ),
    );
    if !f.events.is_empty() {
        line(&mut o, forced_removals_table(f).to_markdown());
    }
    let c = &r.break_glass_claims;
    line(
        &mut o,
        format!(
            "\n## Break-glass claims (not evidence): {} unconfirmed, {} ambiguous, {} confirmed\n",
            c.unconfirmed_total, c.ambiguous_total, c.confirmed_total
        ),
    );
    if !c.unconfirmed.is_empty() {
        line(
            &mut o,
            "Reviews from a peer that did not prove it is the API server; the user is what the caller claimed, \
             and no removal by that user was observed.\n"
                .into(),
        );
        line(&mut o, claims_table(c).to_markdown());
    }
    let a = &r.amendments;
    line(
        &mut o,
        format!(
            "\n## Conflicts and amendments: {} amendments of {} records\n",
            a.total, a.records_amended
        ),
    );
    if !a.items.is_empty() {
        line(&mut o, amendments_table(a).to_markdown());
    }
    let an = &r.anomalies;
    line(&mut o, format!("\n## Anomalies: {} records with out-of-range values\n", an.records));
    if !an.items.is_empty() {
        line(&mut o, anomalies_table(an).to_markdown());
    }
    let w = &r.deletion_waits;
    line(&mut o, format!("\n## Deletions that waited on Data Storage: {}\n", w.deletions));
    line(&mut o, "A record with trigger `deletion` was first stored while its CR was being deleted; the wait is its stored time minus the CR's deletionTimestamp.\n".into());
    if let Some(l) = &w.longest {
        line(
            &mut o,
            format!(
                "Mean {} s; longest {:.3} s: {} ({}/{}), deleted {}, stored {}.\n",
                fmt_opt(w.mean_seconds, 3),
                l.seconds,
                md(&l.id),
                md(&label(&l.namespace)),
                md(&label(&l.name)),
                l.deleted_at.to_rfc3339(),
                l.stored_at.to_rfc3339()
            ),
        );
        line(&mut o, "| wait | deletions |\n|---|---|".into());
        for b in &w.histogram {
            line(&mut o, format!("| {} | {} |", fmt_le(b), b.count));
        }
    }
    line(&mut o, "\n## Buffered-writer drops\n".into());
    line(
        &mut o,
        match r.writer_drops.dropped {
            Some(d) => format!("{d:.0} records dropped by the buffered writers ({}).", md(&r.writer_drops.note)),
            None => format!("Omitted: {}", md(&r.writer_drops.note)),
        },
    );
    o
}

impl Table {
    pub(super) fn to_markdown(&self) -> String {
        let mut t = format!("| {} |\n|{}", self.head.join(" | "), "---|".repeat(self.head.len()));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| md(c)).collect();
            t.push_str(&format!("\n| {} |", cells.join(" | ")));
        }
        t
    }
}
