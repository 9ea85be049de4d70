//! Verification of what Data Storage holds: the chain walked link by link (every shard, from
//! its first entry), and every stored row of the period put through the checks of
//! [`crate::evidence::verify`]. Only the paging through a [`Store`] is here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::store::{DbResult, Store, TimeRange};
use crate::evidence::chain::{self, ChainKeys, ChainWalk, EntryKind, Finding, Findings, Head, Problem};
use crate::evidence::verify::{check_amendment, check_event, check_record, finding, Checked, Observer, Verdict, VerifyReport};

/// Rows per page: big enough that 1,000,000 records take a few hundred round trips, small
/// enough that a page stays well under the statement timeout and a few MiB of memory.
pub const PAGE: u32 = 5_000;
/// Missing records listed by name (all are counted).
const MISSING_SAMPLE: u32 = 100;

/// Whether a month's partition is past the retention the verifier was told to expect.
pub fn expired(year: i32, month: u32, retention_months: u32, now: DateTime<Utc>) -> bool {
    let name = super::postgres::partition_name(year, month);
    !super::postgres::partitions_to_drop([name.as_str()], now, retention_months).is_empty()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyOptions {
    pub range: TimeRange,
    pub retention_months: u32,
    /// Heads published earlier (an earlier verify's `heads`, an export manifest's `chain_heads`).
    pub anchors: Vec<Head>,
}

/// Recomputes the chain and checks every row of the period. Memory stays bounded by a page.
pub async fn verify(store: &dyn Store, keys: &ChainKeys, opts: &VerifyOptions, now: DateTime<Utc>) -> DbResult<VerifyReport> {
    verify_observed(store, keys, opts, now, &mut ()).await
}

/// As [`verify`], showing every row of the period to `observer` as it goes by.
pub async fn verify_observed(
    store: &dyn Store,
    keys: &ChainKeys,
    opts: &VerifyOptions,
    now: DateTime<Utc>,
    observer: &mut dyn Observer,
) -> DbResult<VerifyReport> {
    let mut findings = Findings::default();

    // 1. Every link of every shard, in order.
    let anchored: HashSet<(i32, i64)> = opts.anchors.iter().map(|a| (a.shard, a.seq)).collect();
    let mut at_anchors: HashMap<(i32, i64), chain::Hash> = HashMap::new();
    let mut walk = ChainWalk::new(keys);
    let mut after = None;
    loop {
        let page = store.chain_links(after, PAGE).await?;
        for link in &page {
            walk.push(link, &mut findings);
            if anchored.contains(&(link.shard, link.seq)) {
                at_anchors.insert((link.shard, link.seq), link.hash);
            }
        }
        match page.last() {
            Some(l) if page.len() == PAGE as usize => after = Some((l.shard, l.seq)),
            _ => break,
        }
    }
    let (chain_entries, heads) = walk.finish();
    for f in chain::check_anchors(&opts.anchors, &at_anchors) {
        findings.push(f);
    }

    // 2. The period's rows against their links and themselves. The checks of a page run on a
    // blocking thread while the next page is read.
    let mut checked = Checked::default();
    let range = opts.range;
    let mut after = None;
    let mut pending: Option<tokio::task::JoinHandle<Vec<Finding>>> = None;
    loop {
        let page = store.record_rows(range, after.clone(), PAGE).await?;
        if let Some(p) = pending.take() {
            push_all(&mut findings, p.await);
        }
        checked.records += page.len() as u64;
        page.iter().for_each(|r| observer.record(r));
        let next = page.last().map(|r| (r.columns.stored_at, r.id.clone()));
        let full = page.len() == PAGE as usize;
        pending = Some(tokio::task::spawn_blocking(move || page.iter().flat_map(check_record).collect()));
        match next {
            Some(n) if full => after = Some(n),
            _ => break,
        }
    }
    if let Some(p) = pending.take() {
        push_all(&mut findings, p.await);
    }
    let mut after = None;
    loop {
        let page = store.amendment_rows(range, after, PAGE).await?;
        checked.amendments += page.len() as u64;
        for row in &page {
            observer.amendment(row);
            for f in check_amendment(row) {
                findings.push(f);
            }
        }
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = Some((r.amended_at, r.amendment_id.clone())),
            _ => break,
        }
    }
    let mut after = None;
    loop {
        let page = store.event_rows(range, after, PAGE).await?;
        checked.break_glass_events += page.len() as u64;
        for row in &page {
            observer.event(row);
            for f in check_event(row) {
                findings.push(f);
            }
        }
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = Some((r.at, r.id.clone())),
            _ => break,
        }
    }

    // 3. Chained records whose rows are gone.
    let missing = store.records_without_rows(range, MISSING_SAMPLE).await?;
    let mut expired_by_retention = 0;
    let mut listed: HashMap<(i32, u32), u64> = HashMap::new();
    for (ym, _) in &missing.sample {
        *listed.entry(*ym).or_default() += 1;
    }
    for (y, m, n, present) in &missing.by_month {
        let partition = super::postgres::partition_name(*y, *m);
        let (problem, why) = if *present {
            (
                Problem::Missing,
                format!("deleted from partition {partition}, which is still there"),
            )
        } else if opts.retention_months > 0 && expired(*y, *m, opts.retention_months, now) {
            expired_by_retention += n;
            continue;
        } else {
            (
                Problem::PartitionDropped,
                format!(
                    "gone with partition {partition}, which was dropped although the expected retention ({} months) keeps it",
                    opts.retention_months
                ),
            )
        };
        for (_, link) in missing.sample.iter().filter(|(ym, _)| *ym == (*y, *m)) {
            findings.push(Finding::at_link(
                problem,
                link,
                format!("the chained record {:?} is {why}", link.id),
            ));
        }
        let unlisted = n.saturating_sub(listed.get(&(*y, *m)).copied().unwrap_or(0));
        findings.count_more(problem, unlisted);
    }

    // 4. Id rows written around the service (they hold an id with nothing behind it).
    let (bare, named) = store.bare_ids(MISSING_SAMPLE).await?;
    for id in &named {
        findings.push(finding(
            Problem::BareId,
            None,
            EntryKind::Record,
            id,
            format!(
                "the id {id:?} is held by an id row with no record, no chain link and no log entry: written around \
                 the service, it makes every POST of that record a conflict"
            ),
        ));
    }
    findings.count_more(Problem::BareId, bare.saturating_sub(named.len() as u64));

    let total = findings.total;
    let by_problem = findings.by_problem.clone();
    let kept = findings.into_sorted();
    Ok(VerifyReport {
        result: if total == 0 { Verdict::Intact } else { Verdict::Broken },
        verified_at: now,
        since: range.since,
        until: range.until,
        retention_months: opts.retention_months,
        chain_entries,
        heads,
        checked,
        expired_by_retention,
        anchors_checked: opts.anchors.len(),
        findings_total: total,
        findings_by_problem: by_problem,
        first_broken: kept.first().cloned(),
        findings: kept,
    })
}

fn push_all(findings: &mut Findings, checked: Result<Vec<Finding>, tokio::task::JoinError>) {
    match checked {
        Ok(list) => list.into_iter().for_each(|f| findings.push(f)),
        // A panic in a check is a bug, and must not read as "intact".
        Err(e) => findings.push(Finding {
            problem: Problem::ColumnChanged,
            shard: None,
            seq: None,
            kind: None,
            id: None,
            detail: format!("a page of records could not be checked: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_decides_which_dropped_months_are_expected() {
        let now: DateTime<Utc> = "2026-06-15T00:00:00Z".parse().unwrap();
        assert!(expired(2025, 1, 15, now));
        assert!(!expired(2025, 6, 15, now));
        assert!(!expired(2025, 1, 0, now), "0: nothing may be gone");
    }
}
