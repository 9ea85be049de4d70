//! `verify-log`'s judgement: the log Data Storage serves, held against a checkpoint the auditor
//! saved earlier and the log's public key — no chain key, no trust in the service. Plain
//! functions over what was fetched; the command does the fetching.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Utc};

use crate::evidence::entry::{time_text, Entry, Kind};
use crate::evidence::export_log::{self, describe, kind_name};
use crate::evidence::merkle::{leaf_hash, root_at, verify_consistency, Hash, MemoryTree};
use crate::evidence::note::Checkpoint;

/// Items named one by one per kind of problem (all are counted).
const NAMED: usize = 20;

/// What the served log holds, and everything wrong with it (empty: it checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFindings {
    pub size: u64,
    pub records: u64,
    pub amendments: u64,
    pub break_glass: u64,
    pub problems: Vec<String>,
}

impl LogFindings {
    pub fn summary(&self) -> String {
        let what = format!(
            "{} entries ({} records, {} amendments, {} break-glass events)",
            self.size, self.records, self.amendments, self.break_glass
        );
        match self.problems.first() {
            None => format!("consistent: the signed checkpoint covers {what}"),
            Some(first) => format!("NOT consistent: {} problem(s); first: {first}", self.problems.len()),
        }
    }
}

/// Judges the latest signed checkpoint `latest` (its signature already checked), the entries
/// served for it, and — when the auditor kept one — the earlier checkpoint `saved` with the
/// consistency proof from it.
pub fn judge(latest: &Checkpoint, entries: &[Vec<u8>], saved: Option<(&Checkpoint, &[Hash])>) -> LogFindings {
    let mut f = LogFindings {
        size: latest.size,
        ..Default::default()
    };
    if entries.len() as u64 != latest.size {
        f.problems.push(format!(
            "the checkpoint covers {} entries but {} were served",
            latest.size,
            entries.len()
        ));
    }
    for (i, e) in entries.iter().enumerate() {
        match Entry::decode(e) {
            Ok(d) => match d.kind {
                Kind::Record => f.records += 1,
                Kind::Amendment => f.amendments += 1,
                Kind::BreakGlass => f.break_glass += 1,
            },
            Err(err) => f.problems.push(format!("entry {i}: {err}")),
        }
    }
    let tree: MemoryTree = entries.iter().map(|e| leaf_hash(e)).collect();
    if tree.size() == latest.size && tree.root() != latest.root {
        f.problems
            .push("the served entries do not give the signed root: an entry was changed, removed, added or reordered".into());
    }
    if let Some((old, proof)) = saved {
        if old.origin != latest.origin {
            f.problems
                .push(format!("the saved checkpoint is of log {:?}, not {:?}", old.origin, latest.origin));
        } else if old.size > latest.size {
            f.problems.push(format!(
                "the log shrank: the saved checkpoint covers {} entries, the latest {}",
                old.size, latest.size
            ));
        } else if let Err(e) = verify_consistency(old.size, latest.size, proof, &old.root, &latest.root) {
            f.problems.push(format!(
                "the latest checkpoint does not extend the saved one of {} entries (a fork or rewritten history): {e}",
                old.size
            ));
        }
        if old.size <= tree.size() && root_at(&tree, old.size).ok() != Some(old.root) {
            f.problems.push(format!(
                "the served entries do not give the saved checkpoint's root at {} entries",
                old.size
            ));
        }
    }
    f
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The log entry an item must have, recomputed from its line in an NDJSON export
/// ([`export_log::ndjson_row`]).
pub fn expected_entry(line: &str) -> Result<Entry, String> {
    export_log::ndjson_row(line).map(|r| r.entry)
}

/// What the check of the log against the served items counted beside its problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Items served, each matched with its entry.
    pub matched: u64,
    /// Items served that were stored before the log's first entry (the log does not hold them).
    pub before_log: u64,
    /// Entries whose items are expected gone: stored before `retained_from`.
    pub expired: u64,
}

/// Holds the log's entries against the items Data Storage serves (each as the entry it must
/// have, [`expected_entry`]): every served item stored since the log began must have exactly
/// its entry, and every entry's item must still be served unless it is older than
/// `retained_from` (the retention the auditor expects). Every mismatch is a problem naming the
/// item.
pub fn cross_check(log: &[(u64, Vec<u8>)], served: &[Entry], retained_from: Option<DateTime<Utc>>, f: &mut LogFindings) -> Coverage {
    let mut cov = Coverage::default();
    let logged: HashMap<(u8, String), (u64, Entry)> = log
        .iter()
        .filter_map(|(i, bytes)| Entry::decode(bytes).ok().map(|e| ((e.kind.byte(), e.id.clone()), (*i, e))))
        .collect();
    let first_logged = logged.values().map(|(_, e)| e.stored_at).min();
    let mut seen: HashSet<(u8, &str)> = HashSet::with_capacity(served.len());
    let (mut changed, mut unlogged) = (vec![], vec![]);
    for s in served {
        seen.insert((s.kind.byte(), s.id.as_str()));
        match logged.get(&(s.kind.byte(), s.id.clone())) {
            Some((_, e)) if e == s => cov.matched += 1,
            Some((i, e)) => changed.push(format!(
                "the {} is served with content SHA-256 {} but its log entry {i} says {} (CR uid {:?}, stored at {}, SHA-256 {}): \
                 changed after it was logged",
                describe(s),
                hex(&s.content_sha256),
                kind_name(e.kind),
                e.cr_uid,
                time_text(e.stored_at),
                hex(&e.content_sha256)
            )),
            None if first_logged.is_some_and(|t| s.stored_at >= t) => unlogged.push(format!(
                "the {} is served but the log has no entry for it (stored around the log, or its entry removed)",
                describe(s)
            )),
            None => cov.before_log += 1,
        }
    }
    let mut gone: BTreeMap<(i32, u32), Vec<String>> = BTreeMap::new();
    let mut indexed: Vec<&(u64, Entry)> = logged.values().collect();
    indexed.sort_by_key(|(i, _)| *i);
    for (i, e) in indexed {
        if seen.contains(&(e.kind.byte(), e.id.as_str())) {
            continue;
        }
        if retained_from.is_some_and(|t| e.stored_at < t) {
            cov.expired += 1;
            continue;
        }
        gone.entry((e.stored_at.year(), e.stored_at.month()))
            .or_default()
            .push(format!("log entry {i}: the {} is no longer served", describe(e)));
    }
    name_all(f, "served items differ from their log entries", changed);
    name_all(f, "served items have no log entry", unlogged);
    for ((y, m), lines) in gone {
        name_all(
            f,
            &format!("items stored in {y}-{m:02} are in the log but no longer served (deleted, or their month's partition dropped)"),
            lines,
        );
    }
    cov
}

/// One problem saying how many, then each of the first [`NAMED`] by name.
fn name_all(f: &mut LogFindings, what: &str, lines: Vec<String>) {
    if lines.is_empty() {
        return;
    }
    f.problems.push(format!("{} {what}", lines.len()));
    let more = lines.len().saturating_sub(NAMED);
    f.problems.extend(lines.into_iter().take(NAMED));
    if more > 0 {
        f.problems.push(format!("... and {more} more"));
    }
}

/// Names the served entries that are not the ones the log's stored leaf hashes (its level-0
/// tiles, `leaves[i]` the hash at index i where served) are of — an entry changed or moved to
/// another index — and says whether those stored hashes give the signed root (if not, they
/// were rewritten too).
pub fn compare_leaves(entries: &[(u64, Vec<u8>)], leaves: &[Option<Hash>], signed: &Checkpoint, f: &mut LogFindings) {
    let moved: Vec<String> = entries
        .iter()
        .filter_map(|(i, e)| {
            let stored = leaves.get(usize::try_from(*i).ok()?).copied().flatten()?;
            (leaf_hash(e) != stored).then(|| {
                let what = Entry::decode(e).map_or_else(|err| format!("an undecodable entry ({err})"), |d| describe(&d));
                format!("entry {i}, the {what}, is not the entry the log's stored hash at index {i} is of: changed or reordered")
            })
        })
        .collect();
    name_all(f, "entries are not where the log's stored hashes put them", moved);
    let all: Option<Vec<Hash>> = leaves.iter().copied().collect();
    if let Some(tree) = all.map(|l| l.into_iter().collect::<MemoryTree>()) {
        if tree.size() == signed.size && tree.root() != signed.root {
            f.problems.push(format!(
                "the log's stored hashes do not give the signed root of {} entries either: they were rewritten",
                signed.size
            ));
        }
    }
}

/// The longest run of entries from index 0 without a gap (what [`judge`] takes).
pub fn contiguous(entries: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .enumerate()
        .take_while(|(n, (i, _))| *n as u64 == *i)
        .map(|(_, (_, e))| e.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::consistency_proof;
    use chrono::Utc;

    fn entries(n: usize) -> Vec<Vec<u8>> {
        let kinds = [Kind::Record, Kind::Amendment, Kind::BreakGlass];
        (0..n)
            .map(|i| {
                Entry::new(kinds[i % 3], &format!("item-{i}"), "uid", Utc::now(), b"{}")
                    .encode()
                    .unwrap()
            })
            .collect()
    }

    fn checkpoint(entries: &[Vec<u8>], size: u64) -> Checkpoint {
        let tree: MemoryTree = entries.iter().map(|e| leaf_hash(e)).collect();
        Checkpoint {
            origin: "example.com/log".into(),
            size,
            root: root_at(&tree, size).unwrap(),
            extensions: vec![],
        }
    }

    #[test]
    fn an_honest_log_checks_and_each_kind_of_lie_is_named() {
        let all = entries(20);
        let latest = checkpoint(&all, 20);
        let saved = checkpoint(&all, 13);
        let tree: MemoryTree = all.iter().map(|e| leaf_hash(e)).collect();
        let proof = consistency_proof(&tree, 13, 20).unwrap();
        let ok = judge(&latest, &all, Some((&saved, &proof)));
        assert_eq!(ok.problems, Vec::<String>::new());
        assert_eq!((ok.records, ok.amendments, ok.break_glass), (7, 7, 6));
        assert!(ok.summary().starts_with("consistent"), "{}", ok.summary());

        // A tail cut: fewer entries served than signed.
        assert!(judge(&latest, &all[..19], None).problems[0].contains("19 were served"));
        // An entry changed, or two swapped.
        let mut changed = all.clone();
        changed[4][5] ^= 1;
        assert!(judge(&latest, &changed, None).problems.iter().any(|p| p.contains("signed root")));
        let mut swapped = all.clone();
        swapped.swap(3, 4);
        assert!(judge(&latest, &swapped, None).problems.iter().any(|p| p.contains("reordered")));
        // A rewritten history, signed anew: the saved checkpoint is not extended.
        let mut rewritten = all.clone();
        rewritten[2] = entries(30)[25].clone();
        let forged = checkpoint(&rewritten, 20);
        let forged_tree: MemoryTree = rewritten.iter().map(|e| leaf_hash(e)).collect();
        let forged_proof = consistency_proof(&forged_tree, 13, 20).unwrap();
        let bad = judge(&forged, &rewritten, Some((&saved, &forged_proof)));
        assert!(bad.problems.iter().any(|p| p.contains("does not extend")), "{bad:?}");
        assert!(bad.summary().starts_with("NOT consistent"));
        // A smaller tree than the one saved.
        let shrunk = judge(&saved, &all[..13], Some((&latest, &[])));
        assert!(shrunk.problems[0].contains("shrank"), "{shrunk:?}");
    }

    /// Export lines as Data Storage writes them: its own fields, then the stored JSON verbatim.
    fn line(kind: &str, id: &str, time_key: &str, at: &str, member: &str, stored: &str) -> String {
        format!("{{\"kind\":\"{kind}\",\"id\":\"{id}\",\"{time_key}\":\"{at}\",\"chain\":null,\"{member}\":{stored}}}")
    }

    #[test]
    fn an_export_line_gives_the_entry_of_its_stored_text_byte_for_byte() {
        let at = "2026-12-07T06:38:32.123456Z";
        // Odd spacing and a misleading string inside: the digest is of the text as stored.
        let stored = r#"{"id": "rec-1",  "uid":"u-1", "note": ",\"record\":x"}"#;
        let e = expected_entry(&line("record", "rec-1", "stored_at", at, "record", stored)).unwrap();
        let want = Entry::new(Kind::Record, "rec-1", "u-1", at.parse().unwrap(), stored.as_bytes());
        assert_eq!(e, want);
        let e = expected_entry(&line("amendment", "am-1", "at", at, "record", stored)).unwrap();
        assert_eq!((e.kind, e.id.as_str(), e.cr_uid.as_str()), (Kind::Amendment, "am-1", "u-1"));
        let e = expected_entry(&line("break_glass", "bg-1", "stored_at", at, "event", "{}")).unwrap();
        assert_eq!((e.kind, e.cr_uid.as_str()), (Kind::BreakGlass, ""));
        assert!(expected_entry(&line("other", "x", "stored_at", at, "record", "{}")).is_err());
        assert!(expected_entry(&line("record", "x", "at", at, "record", "{}"))
            .unwrap_err()
            .contains("stored_at"));
        assert!(expected_entry("{\"kind\":\"record\"").is_err());
    }

    fn item(kind: Kind, id: &str, at: &str, content: &[u8]) -> Entry {
        Entry::new(kind, id, "uid", at.parse().unwrap(), content)
    }

    #[test]
    fn the_log_against_what_is_served_names_every_difference() {
        let log_items = [
            item(Kind::Record, "a", "2026-10-05T00:00:00Z", b"1"),
            item(Kind::Record, "b", "2026-11-05T00:00:00Z", b"2"),
            item(Kind::Amendment, "c", "2026-12-01T00:00:00Z", b"3"),
            item(Kind::BreakGlass, "d", "2026-12-02T00:00:00Z", b"4"),
        ];
        let log: Vec<(u64, Vec<u8>)> = log_items.iter().enumerate().map(|(i, e)| (i as u64, e.encode().unwrap())).collect();
        let mut f = LogFindings::default();
        let cov = cross_check(&log, &log_items, None, &mut f);
        assert_eq!((f.problems.len(), cov.matched), (0, 4), "{f:?}");

        let served = [
            // Predates the log: not expected in it.
            item(Kind::Record, "old", "2026-01-01T00:00:00Z", b"0"),
            item(Kind::Record, "b", "2026-11-05T00:00:00Z", b"2, changed"),
            item(Kind::Amendment, "c", "2026-12-01T00:00:00Z", b"3"),
            item(Kind::BreakGlass, "d", "2026-12-02T00:00:00Z", b"4"),
            item(Kind::Record, "e", "2026-12-03T00:00:00Z", b"5"),
        ];
        let mut f = LogFindings::default();
        let cov = cross_check(&log, &served, None, &mut f);
        assert_eq!((cov.matched, cov.before_log, cov.expired), (2, 1, 0));
        let all = f.problems.join("\n");
        assert!(
            all.contains("1 served items differ") && all.contains("the record \"b\"") && all.contains("changed after it was logged"),
            "{all}"
        );
        assert!(
            all.contains("1 served items have no log entry") && all.contains("the record \"e\""),
            "{all}"
        );
        assert!(
            all.contains("1 items stored in 2026-10 are in the log but no longer served") && all.contains("log entry 0: the record \"a\""),
            "{all}"
        );
        // A's month is past the retention the auditor expects.
        let mut f = LogFindings::default();
        let cov = cross_check(&log, &served, Some("2026-11-01T00:00:00Z".parse().unwrap()), &mut f);
        assert_eq!(cov.expired, 1);
        assert!(!f.problems.join("\n").contains("2026-10"), "{f:?}");
    }

    #[test]
    fn entries_are_held_against_the_stored_leaf_hashes() {
        let all = entries(6);
        let cp = checkpoint(&all, 6);
        let leaves: Vec<Option<Hash>> = all.iter().map(|e| Some(leaf_hash(e))).collect();
        let mut indexed: Vec<(u64, Vec<u8>)> = all.iter().cloned().enumerate().map(|(i, e)| (i as u64, e)).collect();
        let mut f = LogFindings::default();
        compare_leaves(&indexed, &leaves, &cp, &mut f);
        assert!(f.problems.is_empty(), "{f:?}");
        indexed.swap(1, 2);
        indexed[1].0 = 1;
        indexed[2].0 = 2;
        compare_leaves(&indexed, &leaves, &cp, &mut f);
        assert_eq!(f.problems.len(), 3, "{f:?}");
        assert!(f.problems[1].starts_with("entry 1, the break-glass event \"item-2\""), "{f:?}");
        // Hashes rewritten to match the moved entries no longer give the signed root.
        let rewritten: Vec<Option<Hash>> = indexed.iter().map(|(_, e)| Some(leaf_hash(e))).collect();
        let mut f = LogFindings::default();
        compare_leaves(&indexed, &rewritten, &cp, &mut f);
        assert!(f.problems[0].contains("rewritten"), "{f:?}");
        // A gap ends what judge takes.
        indexed.remove(3);
        assert_eq!(contiguous(&indexed).len(), 3);
    }
}
