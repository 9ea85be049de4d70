//! The witness's decisions (C2SP tlog-witness): whether to cosign a checkpoint a log submits
//! with a consistency proof from the size the witness last cosigned. Plain functions over plain
//! data: the server (`audit-guard log-witness`) keeps the state and answers HTTP, Data Storage
//! builds the same request bodies to push its checkpoints.
//!
//! A request body is an `old <size>` line, up to 63 consistency proof lines (one base64 hash
//! each), a blank line, then the signed checkpoint. The witness answers 200 with its
//! cosignature lines, 409 with the size it knows (`text/x.tlog.size`) when `old` is not that
//! size or the same size comes with another root, 422 when the proof does not verify, 404 for a
//! log it does not know, 403 when the log's signature is missing or wrong, 400 for anything
//! malformed (including an `old` larger than the checkpoint).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::merkle::{verify_consistency, Hash};
use super::note::{canonical_decimal, canonical_hash, Checkpoint, Note, NoteError, SignerKey, VerifierKey};

/// The spec's bound on consistency proof lines (a proof of a tree below 2^63 leaves is shorter).
pub const MAX_PROOF_LINES: usize = 63;
/// The media type of a 409's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// One `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint, as sent.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body strictly; the error says what is wrong (a 400).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let split = body
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or("no blank line between the proof and the checkpoint")?;
        let head = std::str::from_utf8(&body[..split]).map_err(|_| "the old size and proof lines are not UTF-8")?;
        let mut lines = head.split('\n');
        let old_line = lines.next().unwrap_or_default();
        let old = old_line
            .strip_prefix("old ")
            .ok_or_else(|| format!("the first line {old_line:?} is not `old <size>`"))?;
        let old = canonical_decimal(old).map_err(|r| format!("old size {old:?} {r}"))?;
        let proof = lines
            .map(|l| canonical_hash(l).map_err(|r| format!("proof line {l:?} {r}")))
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(format!("more than {MAX_PROOF_LINES} proof lines"));
        }
        Ok(Self {
            old,
            proof,
            checkpoint: body[split + 2..].to_vec(),
        })
    }
}

/// Why the witness does not cosign, with the HTTP status it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    #[error("the checkpoint is not signed by the log's key: {0}")]
    Forbidden(NoteError),
    /// `old` is not the size the witness knows, or a checkpoint of that size with another root.
    #[error("conflict: the witness's latest checkpoint of this log has size {known}: {reason}")]
    Conflict { known: u64, reason: String },
    #[error("the consistency proof from size {old} to {new} does not verify")]
    BadProof { old: u64, new: u64 },
    /// The witness itself failed (e.g. could not store its state): nothing was cosigned.
    #[error("witness error: {0}")]
    Internal(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::BadProof { .. } => 422,
            Refusal::Internal(_) => 500,
        }
    }
}

/// The logs a witness knows: origin → the log's verifier key.
pub type Logs = HashMap<String, VerifierKey>;

/// Checks a request against the log keys and the latest cosigned checkpoint of its origin
/// (`latest(origin)`); on success returns the new checkpoint and its note, which the caller
/// stores (atomically with this check) before cosigning.
pub fn check(logs: &Logs, latest: impl FnOnce(&str) -> Option<Checkpoint>, req: &AddCheckpoint) -> Result<(Checkpoint, Note), Refusal> {
    let note = Note::parse(&req.checkpoint).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let cp = Checkpoint::parse(&note.text).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let key = logs.get(&cp.origin).ok_or_else(|| Refusal::UnknownLog(cp.origin.clone()))?;
    note.verify(key).map_err(Refusal::Forbidden)?;
    if req.old > cp.size {
        return Err(Refusal::Malformed(format!(
            "old size {} is larger than the checkpoint's size {}",
            req.old, cp.size
        )));
    }
    let known = latest(&cp.origin);
    let known_size = known.as_ref().map_or(0, |k| k.size);
    if req.old != known_size {
        return Err(Refusal::Conflict {
            known: known_size,
            reason: format!("the request is from size {}", req.old),
        });
    }
    match known {
        None => {
            if !req.proof.is_empty() {
                return Err(Refusal::Malformed("a proof from size 0 must be empty".into()));
            }
        }
        Some(k) if k.size == cp.size => {
            if k.root != cp.root {
                return Err(Refusal::Conflict {
                    known: k.size,
                    reason: "a checkpoint of the same size with another root hash (a fork)".into(),
                });
            }
        }
        Some(k) => verify_consistency(k.size, cp.size, &req.proof, &k.root, &cp.root)
            .map_err(|_| Refusal::BadProof { old: k.size, new: cp.size })?,
    }
    Ok((cp, note))
}

/// The 200 answer: the witness's cosignature line(s) on the checkpoint, made at `timestamp`.
pub fn cosignature_lines(note: &Note, key: &SignerKey, timestamp: u64) -> Result<Vec<u8>, NoteError> {
    let mut bare = Note::new(&note.text)?;
    bare.cosign(key, timestamp)?;
    let all = bare.to_bytes();
    // The note is text, blank line, signature lines: keep the lines.
    Ok(all[note.text.len() + 1..].to_vec())
}

/// Adds the cosignature lines a witness answered to `note`, keeping only those that verify
/// with `witness` (others are ignored, as the spec wants). Returns the cosignature's time.
pub fn accept_cosignature(note: &mut Note, answer: &[u8], witness: &VerifierKey) -> Result<u64, NoteError> {
    let mut joined = Note::new(&note.text)?.to_bytes();
    joined.truncate(note.text.len() + 1);
    joined.extend_from_slice(answer);
    let theirs = Note::parse(&joined)?;
    let ts = theirs.verify_cosignature(witness)?;
    for s in theirs.signatures {
        if s.name == witness.name && s.key_id == witness.key_id && !note.signatures.contains(&s) {
            note.signatures.push(s);
        }
    }
    Ok(ts)
}

/// The size a 409 answer names.
pub fn parse_conflict_size(body: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(body).ok()?.strip_suffix('\n')?;
    canonical_decimal(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::{consistency_proof, leaf_hash, MemoryTree};
    use crate::evidence::note::{ALG_COSIGNATURE_V1, ALG_ED25519};
    use ed25519_dalek::SigningKey;

    const ORIGIN: &str = "example.com/log";

    fn log_key() -> SignerKey {
        SignerKey::new(ORIGIN, ALG_ED25519, SigningKey::from_bytes(&[1; 32])).unwrap()
    }

    fn witness_key() -> SignerKey {
        SignerKey::new("example.com/witness", ALG_COSIGNATURE_V1, SigningKey::from_bytes(&[2; 32])).unwrap()
    }

    fn logs() -> Logs {
        HashMap::from([(ORIGIN.to_string(), log_key().verifier().clone())])
    }

    fn tree(n: u64, salt: u8) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.append(leaf_hash(&[salt, i as u8, (i >> 8) as u8]));
        }
        t
    }

    fn signed(t: &MemoryTree, key: &SignerKey) -> Vec<u8> {
        Checkpoint {
            origin: ORIGIN.into(),
            size: t.size(),
            root: t.root(),
            extensions: vec![],
        }
        .sign(key)
        .unwrap()
        .to_bytes()
    }

    fn req(old: u64, t: &MemoryTree) -> AddCheckpoint {
        let proof = if old == 0 {
            vec![]
        } else {
            consistency_proof(t, old, t.size()).unwrap()
        };
        AddCheckpoint {
            old,
            proof,
            checkpoint: signed(t, &log_key()),
        }
    }

    fn cp(t: &MemoryTree) -> Checkpoint {
        Checkpoint {
            origin: ORIGIN.into(),
            size: t.size(),
            root: t.root(),
            extensions: vec![],
        }
    }

    #[test]
    fn requests_round_trip_and_malformed_ones_are_refused() {
        let r = req(5, &tree(9, 0));
        assert_eq!(AddCheckpoint::parse(&r.to_bytes()).unwrap(), r);
        for bad in [
            &b"old 5\n"[..],
            b"old 05\n\nx",
            b"new 5\n\nx",
            b"old 5\nnot base64\n\nx",
            b"old -1\n\nx",
        ] {
            assert!(AddCheckpoint::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"old 1\n".to_vec();
        for _ in 0..64 {
            long.extend_from_slice(format!("{}\n", B64.encode([0u8; 32])).as_bytes());
        }
        long.extend_from_slice(b"\nx");
        assert!(AddCheckpoint::parse(&long).unwrap_err().contains("63"));
    }

    #[test]
    fn first_checkpoint_then_consistent_growth_is_cosigned() {
        let (t5, t9) = (tree(5, 0), tree(9, 0));
        let (got, note) = check(&logs(), |_| None, &req(0, &t5)).unwrap();
        assert_eq!(got, cp(&t5));
        let lines = cosignature_lines(&note, &witness_key(), 1_700_000_000).unwrap();
        assert!(lines.starts_with("— example.com/witness ".as_bytes()));
        let mut n = note.clone();
        assert_eq!(accept_cosignature(&mut n, &lines, witness_key().verifier()).unwrap(), 1_700_000_000);
        assert_eq!(n.signatures.len(), 2);
        n.verify(log_key().verifier()).unwrap();
        // A second time adds nothing.
        accept_cosignature(&mut n, &lines, witness_key().verifier()).unwrap();
        assert_eq!(n.signatures.len(), 2);
        let (got, _) = check(&logs(), |_| Some(cp(&t5)), &req(5, &t9)).unwrap();
        assert_eq!(got.size, 9);
        // The same checkpoint again is fine (idempotent).
        check(&logs(), |_| Some(cp(&t9)), &req(9, &t9)).unwrap();
    }

    #[test]
    fn forks_and_rollbacks_are_409_with_the_known_size() {
        let t9 = tree(9, 0);
        let other9 = tree(9, 1);
        let err = check(&logs(), |_| Some(cp(&t9)), &req(9, &other9)).unwrap_err();
        assert!(matches!(err, Refusal::Conflict { known: 9, .. }), "{err}");
        // A smaller tree: from the size it really has, the witness names what it knows.
        let err = check(&logs(), |_| Some(cp(&t9)), &req(0, &tree(5, 0))).unwrap_err();
        assert!(matches!(err, Refusal::Conflict { known: 9, .. }), "{err}");
        assert_eq!(err.status(), 409);
        // Claiming the known size for a smaller tree is malformed (old > size).
        let mut r = req(0, &tree(5, 0));
        r.old = 9;
        assert_eq!(check(&logs(), |_| Some(cp(&t9)), &r).unwrap_err().status(), 400);
        // A stale old size.
        let err = check(&logs(), |_| Some(cp(&t9)), &req(5, &tree(12, 0))).unwrap_err();
        assert!(matches!(err, Refusal::Conflict { known: 9, .. }));
        // Nothing stored yet and old is not 0.
        let err = check(&logs(), |_| None, &req(5, &t9)).unwrap_err();
        assert!(matches!(err, Refusal::Conflict { known: 0, .. }));
    }

    #[test]
    fn bad_proofs_keys_and_logs_are_refused_with_their_status() {
        let (t5, t9) = (tree(5, 0), tree(9, 0));
        let mut r = req(5, &t9);
        r.proof[0][0] ^= 1;
        assert_eq!(check(&logs(), |_| Some(cp(&t5)), &r).unwrap_err().status(), 422);
        // A history that does not extend the known one: the proof cannot verify.
        assert_eq!(check(&logs(), |_| Some(cp(&t5)), &req(5, &tree(9, 1))).unwrap_err().status(), 422);
        let other = SignerKey::new(ORIGIN, ALG_ED25519, SigningKey::from_bytes(&[3; 32])).unwrap();
        let mut r = req(0, &t5);
        r.checkpoint = signed(&t5, &other);
        assert_eq!(check(&logs(), |_| None, &r).unwrap_err().status(), 403);
        let mut r = req(0, &t5);
        let text = String::from_utf8(r.checkpoint.clone())
            .unwrap()
            .replacen(ORIGIN, "example.com/other", 1);
        r.checkpoint = text.into_bytes();
        assert_eq!(check(&logs(), |_| None, &r).unwrap_err().status(), 404);
        let mut r = req(0, &t5);
        r.checkpoint = b"garbage".to_vec();
        assert_eq!(check(&logs(), |_| None, &r).unwrap_err().status(), 400);
        let mut r = req(0, &t5);
        r.proof = vec![[0; 32]];
        assert_eq!(check(&logs(), |_| None, &r).unwrap_err().status(), 400);
    }

    #[test]
    fn conflict_sizes_parse() {
        assert_eq!(parse_conflict_size(b"17\n"), Some(17));
        assert_eq!(parse_conflict_size(b"17"), None);
        assert_eq!(parse_conflict_size(b"017\n"), None);
    }
}
