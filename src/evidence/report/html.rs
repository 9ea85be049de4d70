//! The period report as one self-contained HTML page with server-side SVG charts (no
//! scripts, fonts or anything fetched from elsewhere).

use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::model::*;
use super::table::*;

/// HTML text: nothing a user name or a namespace carries can become markup.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The series colours of every chart, in order.
pub const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A stacked bar chart as inline SVG: one bar per category, one colour per series.
pub fn stacked_bars(title: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> String {
    const W: f64 = 860.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 50.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 30.0;
    let totals: Vec<f64> = (0..categories.len())
        .map(|i| series.iter().map(|(_, v)| v.get(i).copied().unwrap_or(0.0)).sum())
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max).max(1.0);
    let plot_w = W - LEFT - 10.0;
    let plot_h = H - BOTTOM - TOP;
    let slot = plot_w / categories.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" role=\"img\" aria-label=\"{}\" font-family=\"sans-serif\" font-size=\"11\">",
        H + 20.0 * (series.len() as f64 / 4.0).ceil(),
        esc(title)
    );
    svg.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    ));
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        H - BOTTOM,
        W - 10.0,
        H - BOTTOM
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}</text>",
        LEFT - 4.0,
        TOP + 4.0
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        LEFT - 4.0,
        H - BOTTOM
    ));
    let every = (categories.len() / 12).max(1);
    for (i, cat) in categories.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let mut y = H - BOTTOM;
        for (s, (_, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let h = v / max * plot_h;
            y -= h;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {v}</title></rect>",
                PALETTE[s % PALETTE.len()],
                esc(cat)
            ));
        }
        if i % every == 0 {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                H - BOTTOM + 14.0,
                esc(cat)
            ));
        }
    }
    for (s, (name, _)) in series.iter().enumerate() {
        let x = LEFT + (s % 4) as f64 * 200.0;
        let y = H + 20.0 * (s / 4) as f64;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            y - 10.0,
            PALETTE[s % PALETTE.len()],
            x + 16.0,
            esc(name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Categories (days) and one series per value, from per-day counts.
fn per_day_series<'a>(rows: impl Iterator<Item = (NaiveDate, String, u64)> + Clone + 'a) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let days: Vec<NaiveDate> = rows.clone().map(|(d, _, _)| d).collect::<BTreeSet<_>>().into_iter().collect();
    let names: Vec<String> = rows.clone().map(|(_, n, _)| n).collect::<BTreeSet<_>>().into_iter().collect();
    let series = names
        .iter()
        .map(|name| {
            let values = days
                .iter()
                .map(|d| {
                    rows.clone()
                        .filter(|(rd, rn, _)| rd == d && rn == name)
                        .map(|(_, _, c)| c as f64)
                        .sum()
                })
                .collect();
            (name.clone(), values)
        })
        .collect();
    (days.iter().map(|d| d.format("%m-%d").to_string()).collect(), series)
}

fn html_table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = String::from("<table><tr>");
    for h in head {
        t.push_str(&format!("<th>{}</th>", esc(h)));
    }
    t.push_str("</tr>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            t.push_str(&format!("<td>{}</td>", esc(&c)));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

pub fn to_html(r: &PeriodReport) -> String {
    let mut body = String::new();
    let verdict_class = if r.chain.first_broken.is_none() { "ok" } else { "bad" };
    body.push_str(&format!(
        "<h1>Audit report</h1><p class=\"period\">{} – {} (generated {})</p>",
        esc(&r.since.to_rfc3339()),
        esc(&r.until.to_rfc3339()),
        esc(&r.generated_at.to_rfc3339())
    ));
    body.push_str(&format!(
        "<h2>Chain verification</h2><p class=\"{verdict_class}\">{}</p>",
        esc(&r.chain.summary())
    ));
    if !r.chain.findings.is_empty() {
        body.push_str(&html_table(
            &["problem", "kind", "id", "shard", "seq", "detail"],
            r.chain
                .findings
                .iter()
                .take(50)
                .map(|f| {
                    vec![
                        format!("{:?}", f.problem),
                        f.kind.map_or("".into(), |k| k.as_str().into()),
                        f.id.clone().unwrap_or_default(),
                        f.shard.map_or("".into(), |s| s.to_string()),
                        f.seq.map_or("".into(), |s| s.to_string()),
                        f.detail.clone(),
                    ]
                })
                .collect(),
        ));
    }
    body.push_str(&format!("<h2>Records: {}</h2>", r.records.total));
    let statuses: Vec<String> = r.records.by_status.keys().cloned().collect();
    let triggers: Vec<String> = r.records.by_trigger.keys().cloned().collect();
    let series: Vec<(String, Vec<f64>)> = triggers
        .iter()
        .map(|t| {
            let values = statuses
                .iter()
                .map(|s| {
                    r.records
                        .by_status_and_trigger
                        .iter()
                        .filter(|st| &st.status == s && &label(&st.trigger) == t)
                        .map(|st| st.count as f64)
                        .sum()
                })
                .collect();
            (format!("trigger {t}"), values)
        })
        .collect();
    body.push_str(&stacked_bars("Records by status and trigger", &statuses, &series));
    body.push_str(&html_table(
        &["status", "trigger", "records"],
        r.records
            .by_status_and_trigger
            .iter()
            .map(|st| vec![st.status.clone(), label(&st.trigger), st.count.to_string()])
            .collect(),
    ));
    body.push_str("<h2>Classification by environment, per day</h2>");
    let (days, series) = per_day_series(r.classification_by_day.iter().map(|c| (c.day, label(&c.environment), c.count)));
    body.push_str(&stacked_bars("Records per day by environment", &days, &series));
    body.push_str(&html_table(
        &["day", "environment", "records", "avg confidence"],
        r.classification_by_day
            .iter()
            .map(|c| {
                vec![
                    c.day.to_string(),
                    label(&c.environment),
                    c.count.to_string(),
                    fmt_opt(c.avg_confidence, 3),
                ]
            })
            .collect(),
    ));
    body.push_str("<h2>Priority distribution, per day</h2>");
    let (days, series) = per_day_series(r.priority_by_day.iter().map(|p| (p.day, label(&p.priority), p.count)));
    body.push_str(&stacked_bars("Records per day by priority", &days, &series));
    body.push_str(&html_table(
        &["day", "priority", "records", "avg score"],
        r.priority_by_day
            .iter()
            .map(|p| vec![p.day.to_string(), label(&p.priority), p.count.to_string(), fmt_opt(p.avg_score, 1)])
            .collect(),
    ));
    body.push_str("<h2>Routing decisions</h2>");
    body.push_str(&html_table(
        &["routed_to_service", "records"],
        r.routing
            .by_service
            .iter()
            .map(|c| vec![label(&c.value), c.count.to_string()])
            .collect(),
    ));
    body.push_str(&html_table(
        &["routing_priority", "records"],
        r.routing
            .by_priority
            .iter()
            .map(|c| vec![c.value.map_or("(none)".into(), |v| v.to_string()), c.count.to_string()])
            .collect(),
    ));
    let f = &r.forced_removals;
    body.push_str(&format!(
        "<h2>Forced removals (break-glass): {} events, {} forced records</h2>",
        f.events_total, f.forced_records
    ));
    body.push_str(&forced_removals_table(f).to_html());
    let c = &r.break_glass_claims;
    body.push_str(&format!(
        "<h2>Break-glass claims (not evidence): {} unconfirmed, {} ambiguous, {} confirmed</h2>",
        c.unconfirmed_total, c.ambiguous_total, c.confirmed_total
    ));
    body.push_str(&claims_table(c).to_html());
    let a = &r.amendments;
    body.push_str(&format!(
        "<h2>Conflicts and amendments: {} amendments of {} records</h2>",
        a.total, a.records_amended
    ));
    body.push_str(&amendments_table(a).to_html());
    let an = &r.anomalies;
    body.push_str(&format!("<h2>Anomalies: {} records with out-of-range values</h2>", an.records));
    body.push_str(&anomalies_table(an).to_html());
    let w = &r.deletion_waits;
    body.push_str(&format!("<h2>Deletions that waited on Data Storage: {}</h2>", w.deletions));
    if let Some(l) = &w.longest {
        body.push_str(&format!(
            "<p>Mean {} s; longest {:.3} s: {} ({}/{}), deleted {}, stored {}.</p>",
            fmt_opt(w.mean_seconds, 3),
            l.seconds,
            esc(&l.id),
            esc(&label(&l.namespace)),
            esc(&label(&l.name)),
            esc(&l.deleted_at.to_rfc3339()),
            esc(&l.stored_at.to_rfc3339())
        ));
        let labels: Vec<String> = w.histogram.iter().map(fmt_le).collect();
        let values = w.histogram.iter().map(|b| b.count as f64).collect();
        body.push_str(&stacked_bars(
            "Deletions by time waited on Data Storage",
            &labels,
            &[("deletions".into(), values)],
        ));
    }
    body.push_str("<h2>Buffered-writer drops</h2>");
    body.push_str(&format!(
        "<p>{}</p>",
        esc(&match r.writer_drops.dropped {
            Some(d) => format!("{d:.0} records dropped by the buffered writers ({}).", r.writer_drops.note),
            None => format!("Omitted: {}", r.writer_drops.note),
        })
    ));
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audit report {}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 16px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}th{{background:#f2f2f2}}\
         .ok{{color:#1a7f37;font-weight:bold}}.bad{{color:#c62828;font-weight:bold}}.period{{color:#555}}\
         </style></head><body>{body}</body></html>\n",
        esc(&r.since.to_rfc3339())
    )
}

impl Table {
    pub(super) fn to_html(&self) -> String {
        html_table(self.head, self.rows.clone())
    }
}
