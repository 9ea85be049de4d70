//! `verify-log`'s judgement: the log Data Storage serves, held against a checkpoint the auditor
//! saved earlier and the log's public key — no chain key, no trust in the service. Plain
//! functions over what was fetched; the command does the fetching.

use crate::evidence::entry::{Entry, Kind};
use crate::evidence::merkle::{leaf_hash, root_at, verify_consistency, Hash, MemoryTree};
use crate::evidence::note::Checkpoint;

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
}
