//! Checking an export offline: the manifest's Ed25519 signature under the given public key,
//! then the file against the manifest — its SHA-256 and length, and its rows counted by kind —
//! and, given the log's public key, the log's evidence the manifest carries: the checkpoint's
//! signature and cosignatures, every row's entry in the proven range, the entries the export
//! lacks, the consistency from the checkpoint the auditor saved ([`export_log`]). The file is
//! read once, as a stream: memory holds a line, and 33 bytes per index of the proven range.

use std::io::{BufRead, Read};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::evidence::chain::hex;
use crate::evidence::export_log::{self, CsvColumns, Findings, Period, RangeCheck};
use crate::evidence::manifest::{verify_manifest, Counts, Format, Manifest};
use crate::evidence::note::{Checkpoint, Note, VerifierKey};

/// What the log's evidence is checked with: the log's verifier key, the checkpoint the auditor
/// saved (its signature already checked), and witnesses whose cosignature is required.
#[derive(Debug, Clone)]
pub struct LogTrust {
    pub key: VerifierKey,
    pub saved: Option<Checkpoint>,
    pub witnesses: Vec<VerifierKey>,
}

/// What the check of the log's evidence found.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct LogOutcome {
    pub size: u64,
    /// The checkpoint note as the export carries it (what `--save` writes).
    #[serde(skip)]
    pub note: String,
    /// Each cosignature line: the witness's name and whether a required key checked it.
    pub cosignatures: Vec<String>,
    #[serde(skip)]
    pub findings: Findings,
}

/// What a successful check establishes.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ExportCheck {
    pub manifest: Manifest,
    pub counted: Counts,
    /// None: no log key was given, the log's evidence was not checked.
    pub log: Option<LogOutcome>,
}

/// Wraps a reader, hashing and counting every byte read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn count(counts: &mut Counts, kind: &str, chained: bool) -> Result<(), String> {
    match kind {
        "record" => counts.records += 1,
        "amendment" => counts.amendments += 1,
        "break_glass" => counts.break_glass_events += 1,
        other => return Err(format!("a row of unknown kind {other:?}")),
    }
    if !chained {
        counts.unchained += 1;
    }
    Ok(())
}

fn count_ndjson(r: impl Read, counts: &mut Counts, mut range: Option<&mut RangeCheck>) -> Result<(), String> {
    let mut reader = std::io::BufReader::new(r);
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(|e| format!("reading the export: {e}"))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("line {n} is not JSON: {e}"))?;
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        count(counts, kind, v.get("chain").is_some_and(|c| !c.is_null()))?;
        if let Some(range) = range.as_deref_mut() {
            range.row(n, &export_log::ndjson_row(&line).map_err(|e| format!("line {n}: {e}"))?);
        }
    }
}

fn count_csv(r: impl Read, counts: &mut Counts, mut range: Option<&mut RangeCheck>) -> Result<(), String> {
    let mut reader = csv::Reader::from_reader(r);
    let headers = reader.headers().map_err(|e| format!("reading the CSV header: {e}"))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or(format!("the CSV has no {name} column"))
    };
    let (kind, shard) = (col("kind")?, col("chain_shard")?);
    let columns = match range {
        Some(_) => Some(CsvColumns::find(headers.iter())?),
        None => None,
    };
    let mut record = csv::StringRecord::new();
    let mut n = 1u64;
    while reader.read_record(&mut record).map_err(|e| format!("reading the CSV: {e}"))? {
        n += 1;
        count(
            counts,
            record.get(kind).unwrap_or_default(),
            !record.get(shard).unwrap_or_default().is_empty(),
        )?;
        if let (Some(range), Some(columns)) = (range.as_deref_mut(), &columns) {
            range.row(n, &columns.row(|i| record.get(i)).map_err(|e| format!("line {n}: {e}"))?);
        }
    }
    Ok(())
}

/// The evidence's checkpoint, signed by the log's key, and its cosignature lines: each
/// witness of `required` must have cosigned it; the others are reported by name.
pub fn open_checkpoint(text: &str, trust: &LogTrust) -> Result<(Checkpoint, Vec<String>), String> {
    let (cp, note) = Checkpoint::open(text.as_bytes(), &trust.key, &trust.key.name)
        .map_err(|e| format!("the export's checkpoint is not signed by the log key {}: {e}", trust.key))?;
    let mut lines = Vec::new();
    for w in &trust.witnesses {
        let ts = note
            .verify_cosignature(w)
            .map_err(|e| format!("the export's checkpoint lacks the cosignature of witness {}: {e}", w.name))?;
        lines.push(format!("{} (checked, cosigned at {ts})", w.name));
    }
    lines.extend(
        cosigners(&note, trust)
            .into_iter()
            .map(|n| format!("{n} (not checked: no --witness-key for it)")),
    );
    Ok((cp, lines))
}

/// Names on the note's signature lines other than the log's and the required witnesses'.
fn cosigners(note: &Note, trust: &LogTrust) -> Vec<String> {
    let mut names: Vec<String> = note
        .signatures
        .iter()
        .map(|s| s.name.clone())
        .filter(|n| *n != trust.key.name && !trust.witnesses.iter().any(|w| w.name == *n))
        .collect();
    names.dedup();
    names
}

/// Checks `content` against a signed manifest and, with `trust`, the log's evidence; the error
/// says what does not hold (the log's findings are in the outcome: they name every problem).
pub fn check_export(
    content: impl Read,
    manifest_text: &str,
    signature: &[u8],
    public: &VerifyingKey,
    trust: Option<&LogTrust>,
) -> Result<ExportCheck, String> {
    let manifest = verify_manifest(manifest_text, signature, public)?;
    let (mut range, opened) = match trust {
        None => (None, None),
        Some(t) => {
            let ev = manifest.log.clone().ok_or(
                "the export carries no log evidence: this Data Storage signs no checkpoints (no log signing key), \
                 or it predates log evidence in exports",
            )?;
            let opened = open_checkpoint(&ev.checkpoint, t)?;
            let note = ev.checkpoint.clone();
            let period = Period {
                since: manifest.since,
                until: manifest.until,
            };
            let c = &manifest.counts;
            let rows = c.records + c.amendments + c.break_glass_events;
            (Some(RangeCheck::new(ev, period, rows)?), Some((opened, note)))
        }
    };
    let mut hashing = Hashing {
        inner: content,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut counted = Counts::default();
    // A file that is not even well-formed still gets its digest compared first, below, so
    // the error says "changed" rather than only "malformed".
    let parsed = match manifest.content_format {
        Format::Ndjson => count_ndjson(&mut hashing, &mut counted, range.as_mut()),
        Format::Csv => count_csv(&mut hashing, &mut counted, range.as_mut()),
    };
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| format!("reading the export: {e}"))?;
    let digest = hex(&hashing.hasher.finalize());
    if digest != manifest.content_sha256 || hashing.bytes != manifest.content_bytes {
        return Err(format!(
            "the file is not what was signed: SHA-256 {digest} over {} bytes, the manifest says {} over {} bytes",
            hashing.bytes, manifest.content_sha256, manifest.content_bytes
        ));
    }
    parsed?;
    if counted != manifest.counts {
        return Err(format!(
            "the rows do not match the manifest's counts: {counted:?} vs {:?}",
            manifest.counts
        ));
    }
    let log = match (range, opened, trust) {
        (Some(range), Some(((cp, cosignatures), note)), Some(t)) => Some(LogOutcome {
            size: cp.size,
            note,
            cosignatures,
            findings: range.finish(&cp, t.saved.as_ref()),
        }),
        _ => None,
    };
    Ok(ExportCheck { manifest, counted, log })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::signing::{generate_signing_key, public_key_from_pem, Signer};

    fn signed(content: &[u8], format: Format, counts: Counts) -> (String, [u8; 64], VerifyingKey) {
        let (private, public) = generate_signing_key().unwrap();
        let signer = Signer::from_pem(&private).unwrap();
        let m = Manifest::for_test(&signer, format, content, counts);
        let text = serde_json::to_string(&m).unwrap();
        let sig = signer.sign(text.as_bytes());
        (text, sig, public_key_from_pem(&public).unwrap())
    }

    #[test]
    fn an_export_passes_unchanged_and_fails_after_any_byte_changes() {
        let content = b"{\"kind\":\"record\",\"id\":\"a\",\"chain\":{\"shard\":0},\"record\":{}}\n{\"kind\":\"break_glass\",\"id\":\"e\",\"chain\":null,\"event\":{}}\n";
        let counts = Counts {
            records: 1,
            amendments: 0,
            break_glass_events: 1,
            unchained: 1,
        };
        let (m, sig, key) = signed(content, Format::Ndjson, counts.clone());
        let ok = check_export(&content[..], &m, &sig, &key, None).unwrap();
        assert_eq!(ok.counted, counts);
        for i in [0, 20, content.len() - 2] {
            let mut changed = content.to_vec();
            changed[i] ^= 0x01;
            assert!(
                check_export(changed.as_slice(), &m, &sig, &key, None)
                    .unwrap_err()
                    .contains("not what was signed"),
                "byte {i}"
            );
        }
        assert!(
            check_export(&content[..content.len() - 1], &m, &sig, &key, None).is_err(),
            "truncated"
        );
        let mut bad_sig = sig;
        bad_sig[0] ^= 1;
        assert!(check_export(&content[..], &m, &bad_sig, &key, None)
            .unwrap_err()
            .contains("signature"));
    }

    #[test]
    fn the_checkpoint_is_the_logs_and_required_witnesses_cosigned_it() {
        use crate::evidence::note::{SignerKey, ALG_COSIGNATURE_V1, ALG_ED25519};
        let log = SignerKey::generate("example.com/log", ALG_ED25519).unwrap();
        let w1 = SignerKey::generate("w1.example", ALG_COSIGNATURE_V1).unwrap();
        let w2 = SignerKey::generate("w2.example", ALG_COSIGNATURE_V1).unwrap();
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: [7; 32],
            extensions: vec![],
        };
        let mut note = cp.sign(&log).unwrap();
        note.cosign(&w1, 1_700_000_000).unwrap();
        let text = String::from_utf8(note.to_bytes()).unwrap();
        let trust = |witnesses: Vec<VerifierKey>| LogTrust {
            key: log.verifier().clone(),
            saved: None,
            witnesses,
        };
        let (opened, lines) = open_checkpoint(&text, &trust(vec![])).unwrap();
        assert_eq!(opened, cp);
        assert_eq!(lines, vec!["w1.example (not checked: no --witness-key for it)".to_string()]);
        let (_, lines) = open_checkpoint(&text, &trust(vec![w1.verifier().clone()])).unwrap();
        assert_eq!(lines, vec!["w1.example (checked, cosigned at 1700000000)".to_string()]);
        let e = open_checkpoint(&text, &trust(vec![w2.verifier().clone()])).unwrap_err();
        assert!(e.contains("lacks the cosignature of witness w2.example"), "{e}");
        // One byte of the checkpoint changed: not the log's.
        let changed = text.replacen("\n3\n", "\n4\n", 1);
        assert!(open_checkpoint(&changed, &trust(vec![]))
            .unwrap_err()
            .contains("not signed by the log key"));
        let other = SignerKey::generate("example.com/log", ALG_ED25519).unwrap();
        let wrong = LogTrust {
            key: other.verifier().clone(),
            saved: None,
            witnesses: vec![],
        };
        assert!(open_checkpoint(&text, &wrong).is_err());
    }

    #[test]
    fn csv_exports_are_counted_by_kind() {
        let content = b"kind,id,chain_shard\nrecord,a,0\namendment,b,0\n";
        let counts = Counts {
            records: 1,
            amendments: 1,
            ..Default::default()
        };
        let (m, sig, key) = signed(content, Format::Csv, counts);
        assert!(check_export(&content[..], &m, &sig, &key, None).is_ok());
        // Signed, but the counts lie: refused.
        let (m, sig, key) = signed(content, Format::Csv, Counts::default());
        assert!(check_export(&content[..], &m, &sig, &key, None).unwrap_err().contains("counts"));
    }
}
