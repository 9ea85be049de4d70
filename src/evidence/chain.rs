//! The hash chain that makes Data Storage tamper-evident: every stored entry — record,
//! amendment, break-glass event — is one link,
//!
//! ```text
//! hash(n) = HMAC-SHA256(key[key_id], canonical(n) ‖ hash(n-1))
//! ```
//!
//! where `canonical(n)` is a length-prefixed encoding of what the entry is and where it sits
//! (kind, id, shard, seq, key id, its own time, the time it was stored) and the SHA-256 of its
//! content (the stored JSON text, byte for byte). The digest stands in for the content so that
//! a record whose monthly partition retention dropped still leaves a verifiable link; a record
//! that is still there must hash to it.
//!
//! **Shards.** A single chain would serialise every write of every replica behind one lock.
//! Instead there are a few chains ("shards"); a writer takes whichever shard is free (a
//! transaction-scoped lock in PostgreSQL; SQLite has one writer and one shard), reads its head
//! and appends. Each shard starts at seq 1 from [`GENESIS`]. Verification walks every shard
//! from its start, so a deleted entry (a gap), an altered one (a link that does not recompute),
//! a reordered one (seq is inside the HMAC) or a forged one (no key) is found wherever it is;
//! what a chain alone cannot show is its own tail cut off, which is why heads are published
//! (verify's output, every signed export manifest) and checked later as anchors.
//!
//! **Keys.** The key file holds `key_id:base64-secret` lines; the last line signs new entries,
//! every line verifies. Rotation: append a new line, restart the service; entries keep the key
//! id they were made with.
//!
//! Everything here is plain functions over plain data; the stores read and write the links.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Fixed-width UTC timestamps, so text comparison is time comparison (SQLite) and both
/// backends keep the same (microsecond) precision.
pub fn fixed_ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The previous hash of the first entry of every shard.
pub const GENESIS: [u8; 32] = [0; 32];
/// Domain separation: a link of this chain is never valid in another protocol.
const DOMAIN: &[u8] = b"audit-guard/chain/v1";
/// The shortest secret accepted (HMAC-SHA256's block of key material is 32 bytes of entropy).
pub const MIN_SECRET_BYTES: usize = 32;

pub type Hash = [u8; 32];

/// What an entry is. The chain covers all three, in one sequence per shard.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Record,
    Amendment,
    BreakGlass,
}

impl EntryKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Amendment => "amendment",
            Self::BreakGlass => "break_glass",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "record" => Some(Self::Record),
            "amendment" => Some(Self::Amendment),
            "break_glass" => Some(Self::BreakGlass),
            _ => None,
        }
    }
}

/// One HMAC key of the key file.
#[derive(Clone)]
pub struct ChainKey {
    pub id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("ChainKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ChainKey {
    pub fn new(id: &str, secret: Vec<u8>) -> Result<Self, String> {
        check_key_id(id)?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "key {id:?}: the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        Ok(Self {
            id: id.to_string(),
            secret,
        })
    }
}

fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("key id {id:?}: 1 to 64 characters of [A-Za-z0-9._-]"));
    }
    Ok(())
}

/// Every key the key file names; the last one is the active key.
#[derive(Clone, Debug)]
pub struct ChainKeys {
    keys: Vec<ChainKey>,
    by_id: HashMap<String, usize>,
}

impl ChainKeys {
    /// `key_id:base64` per line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = vec![];
        let mut by_id = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let (id, secret) = line.split_once(':').ok_or_else(|| at("expected key_id:base64-secret".into()))?;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .map_err(|e| at(format!("the secret is not base64: {e}")))?;
            let key = ChainKey::new(id.trim(), secret).map_err(at)?;
            if by_id.insert(key.id.clone(), keys.len()).is_some() {
                return Err(at(format!("key id {:?} appears twice", key.id)));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no key in the chain key file (expected key_id:base64-secret lines)".into());
        }
        Ok(Self { keys, by_id })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading the chain key file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("chain key file {}: {e}", path.display()))
    }

    /// The key new entries are chained with.
    pub fn active(&self) -> &ChainKey {
        // parse() refuses an empty file, so there is a last key.
        &self.keys[self.keys.len() - 1]
    }

    pub fn get(&self, id: &str) -> Option<&ChainKey> {
        self.by_id.get(id).map(|i| &self.keys[*i])
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }
}

/// A new key file line: `id:` and 32 random bytes in base64.
pub fn generate_key_line(id: &str) -> Result<String, String> {
    check_key_id(id)?;
    let secret: [u8; 32] = rand::random();
    Ok(format!("{id}:{}\n", base64::engine::general_purpose::STANDARD.encode(secret)))
}

/// SHA-256 of an entry's content (its stored JSON text).
pub fn content_digest(text: &[u8]) -> Hash {
    Sha256::digest(text).into()
}

/// An entry about to be chained.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub id: String,
    /// The entry's own time: a record's completed_at, an amendment's amended_at, an event's at.
    pub at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub digest: Hash,
}

/// One link as stored beside its entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub shard: i32,
    pub seq: i64,
    pub kind: EntryKind,
    pub id: String,
    pub at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub key_id: String,
    pub digest: Hash,
    pub hash: Hash,
}

/// The last link of a shard.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub shard: i32,
    pub seq: i64,
    #[serde(with = "hex32")]
    pub hash: Hash,
}

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

/// The bytes a link's HMAC covers before the previous hash: every field length-prefixed, so
/// no two different entries encode alike. Times are fixed-width microseconds, as stored.
#[allow(clippy::too_many_arguments)]
pub fn canonical(
    kind: EntryKind,
    id: &str,
    shard: i32,
    seq: i64,
    key_id: &str,
    at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
    digest: &Hash,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    put(&mut buf, DOMAIN);
    put(&mut buf, kind.as_str().as_bytes());
    put(&mut buf, id.as_bytes());
    put(&mut buf, &shard.to_be_bytes());
    put(&mut buf, &seq.to_be_bytes());
    put(&mut buf, key_id.as_bytes());
    put(&mut buf, fixed_ts(at).as_bytes());
    put(&mut buf, fixed_ts(stored_at).as_bytes());
    put(&mut buf, digest);
    buf
}

fn hmac(key: &ChainKey, canonical: &[u8], prev: &Hash) -> Hash {
    // HMAC accepts keys of any length; ChainKey guarantees at least 32 bytes.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&key.secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(canonical);
    mac.update(prev);
    mac.finalize().into_bytes().into()
}

/// The hash a link must carry, given the hash before it.
pub fn link_hash(key: &ChainKey, link: &Link, prev: &Hash) -> Hash {
    let c = canonical(
        link.kind,
        &link.id,
        link.shard,
        link.seq,
        &link.key_id,
        link.at,
        link.stored_at,
        &link.digest,
    );
    hmac(key, &c, prev)
}

/// Chains `entries` onto `head` of `shard` (None: the shard is empty) with `key`.
pub fn extend(key: &ChainKey, shard: i32, head: Option<&Head>, entries: &[NewEntry]) -> Vec<Link> {
    let (mut seq, mut prev) = head.map_or((0, GENESIS), |h| (h.seq, h.hash));
    entries
        .iter()
        .map(|e| {
            seq += 1;
            let mut link = Link {
                shard,
                seq,
                kind: e.kind,
                id: e.id.clone(),
                at: e.at,
                stored_at: e.stored_at,
                key_id: key.id.clone(),
                digest: e.digest,
                hash: GENESIS,
            };
            link.hash = link_hash(key, &link, &prev);
            prev = link.hash;
            link
        })
        .collect()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex32(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A 32-byte hash as a hex string in JSON.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &super::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Hash, D::Error> {
        let s = String::deserialize(d)?;
        super::unhex32(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// A 32-byte value from a database column (BYTEA / BLOB).
pub fn hash_from(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// What verification found wrong.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The link does not recompute: the entry's chained fields, its position or its hash were
    /// changed, or it was written without the key.
    BadLink,
    /// Entries are missing from the chain (deleted).
    Gap,
    /// Two entries claim the same position.
    Duplicate,
    /// The link names a key the verifier does not hold.
    UnknownKey,
    /// The stored content does not hash to its link's digest.
    ContentChanged,
    /// A column disagrees with the content it was written from.
    ColumnChanged,
    /// A chained record is gone while its month's partition is still there (a deleted row).
    Missing,
    /// A chained record is gone with its whole partition, and the month is not past the
    /// retention the verifier was told to expect.
    PartitionDropped,
    /// A stored row has no link (written around the service, or before the chain existed).
    Unchained,
    /// An anchor (a head published earlier) is no longer in the chain as it was.
    AnchorMismatch,
    /// An id row with neither a record, a chain link nor a log entry: written around the
    /// service, it blocks its record's id for good.
    BareId,
}

/// One thing verification found, with where it is.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Finding {
    pub problem: Problem,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EntryKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub detail: String,
}

impl Finding {
    pub fn at_link(problem: Problem, link: &Link, detail: impl Into<String>) -> Self {
        Self {
            problem,
            shard: Some(link.shard),
            seq: Some(link.seq),
            kind: Some(link.kind),
            id: Some(link.id.clone()),
            detail: detail.into(),
        }
    }

    /// Chain position first (so "the first broken link" is the first in chain order), then
    /// findings without a position.
    fn order_key(&self) -> (bool, i32, i64, Problem, Option<String>) {
        (
            self.shard.is_none(),
            self.shard.unwrap_or(i32::MAX),
            self.seq.unwrap_or(i64::MAX),
            self.problem,
            self.id.clone(),
        )
    }
}

/// Findings, counted in full and kept up to a bound (the first ones in chain order).
#[derive(Debug, Clone, Default)]
pub struct Findings {
    kept: Vec<Finding>,
    pub total: u64,
    pub by_problem: std::collections::BTreeMap<Problem, u64>,
}

pub const MAX_FINDINGS_KEPT: usize = 100;

impl Findings {
    pub fn push(&mut self, f: Finding) {
        self.total += 1;
        *self.by_problem.entry(f.problem).or_default() += 1;
        self.kept.push(f);
        if self.kept.len() >= 2 * MAX_FINDINGS_KEPT {
            self.compact();
        }
    }

    /// Counts `n` more findings of a kind without keeping them (only a sample is named).
    pub fn count_more(&mut self, problem: Problem, n: u64) {
        if n > 0 {
            self.total += n;
            *self.by_problem.entry(problem).or_default() += n;
        }
    }

    fn compact(&mut self) {
        self.kept.sort_by_key(Finding::order_key);
        self.kept.truncate(MAX_FINDINGS_KEPT);
    }

    pub fn into_sorted(mut self) -> Vec<Finding> {
        self.compact();
        self.kept
    }
}

/// Walks the links of every shard in (shard, seq) order and checks each against the one
/// before it. Feed it pages in order; it keeps only the current shard's last hash.
#[derive(Debug)]
pub struct ChainWalk<'k> {
    keys: &'k ChainKeys,
    current: Option<(i32, i64, Hash)>,
    pub entries: u64,
    pub heads: Vec<Head>,
}

impl<'k> ChainWalk<'k> {
    pub fn new(keys: &'k ChainKeys) -> Self {
        Self {
            keys,
            current: None,
            entries: 0,
            heads: vec![],
        }
    }

    /// Checks one link; links must come in (shard, seq) order.
    pub fn push(&mut self, link: &Link, findings: &mut Findings) {
        self.entries += 1;
        let (prev_seq, prev) = match self.current {
            Some((shard, seq, hash)) if shard == link.shard => (seq, hash),
            Some((shard, seq, hash)) => {
                self.heads.push(Head { shard, seq, hash });
                (0, GENESIS)
            }
            None => (0, GENESIS),
        };
        if link.seq == prev_seq {
            findings.push(Finding::at_link(
                Problem::Duplicate,
                link,
                format!("a second entry at shard {} seq {}", link.shard, link.seq),
            ));
            return;
        }
        self.current = Some((link.shard, link.seq, link.hash));
        if link.seq != prev_seq + 1 {
            findings.push(Finding::at_link(
                Problem::Gap,
                link,
                format!(
                    "entries {}..={} of shard {} are missing (deleted from the chain)",
                    prev_seq + 1,
                    link.seq - 1,
                    link.shard
                ),
            ));
            // The missing entry's hash is unknown, so this link cannot be checked; the
            // next ones are checked against its stored hash.
            return;
        }
        let Some(key) = self.keys.get(&link.key_id) else {
            findings.push(Finding::at_link(
                Problem::UnknownKey,
                link,
                format!("chained with key {:?}, which the key file does not hold", link.key_id),
            ));
            return;
        };
        if link_hash(key, link, &prev) != link.hash {
            findings.push(Finding::at_link(
                Problem::BadLink,
                link,
                format!(
                    "the {} {:?} at shard {} seq {} does not match its chain hash: its chained fields (id, time, stored time, content digest, position) were changed, or it was written without the key",
                    link.kind.as_str(),
                    link.id,
                    link.shard,
                    link.seq
                ),
            ));
        }
    }

    /// The heads of every shard seen.
    pub fn finish(mut self) -> (u64, Vec<Head>) {
        if let Some((shard, seq, hash)) = self.current.take() {
            self.heads.push(Head { shard, seq, hash });
        }
        (self.entries, self.heads)
    }
}

/// Anchors (heads published earlier) that the chain no longer holds as they were.
pub fn check_anchors(anchors: &[Head], links_at: &HashMap<(i32, i64), Hash>) -> Vec<Finding> {
    anchors
        .iter()
        .filter_map(|a| {
            let detail = match links_at.get(&(a.shard, a.seq)) {
                Some(h) if *h == a.hash => return None,
                Some(h) => format!(
                    "the entry at shard {} seq {} now hashes to {} instead of the anchored {}: the chain was rewritten",
                    a.shard,
                    a.seq,
                    hex(h),
                    hex(&a.hash)
                ),
                None => format!(
                    "the anchored entry at shard {} seq {} is gone: the chain was cut back or the shard removed",
                    a.shard, a.seq
                ),
            };
            Some(Finding {
                problem: Problem::AnchorMismatch,
                shard: Some(a.shard),
                seq: Some(a.seq),
                kind: None,
                id: None,
                detail,
            })
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn keys() -> ChainKeys {
        ChainKeys::parse(&format!(
            "# old\nk1:{}\nk2:{}\n",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
            base64::engine::general_purpose::STANDARD.encode([2u8; 32])
        ))
        .unwrap()
    }

    fn entry(id: &str) -> NewEntry {
        NewEntry {
            kind: EntryKind::Record,
            id: id.into(),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            stored_at: "2026-01-01T00:00:01.5Z".parse().unwrap(),
            digest: content_digest(id.as_bytes()),
        }
    }

    fn walk(keys: &ChainKeys, links: &[Link]) -> (Findings, Vec<Head>) {
        let mut w = ChainWalk::new(keys);
        let mut f = Findings::default();
        for l in links {
            w.push(l, &mut f);
        }
        let (_, heads) = w.finish();
        (f, heads)
    }

    fn problems(f: Findings) -> Vec<(Problem, Option<String>)> {
        f.into_sorted().into_iter().map(|f| (f.problem, f.id)).collect()
    }

    #[test]
    fn key_files_parse_and_the_last_key_is_active() {
        let k = keys();
        assert_eq!(k.active().id, "k2");
        assert!(k.get("k1").is_some());
        assert_eq!(k.ids(), ["k1", "k2"]);
        assert!(!format!("{k:?}").contains("secret"), "no secret in Debug");
        for bad in ["", "# only a comment\n", "k1 AAAA", "k1:not base64!", "k1:AAAA", "bad id:AAAA"] {
            assert!(ChainKeys::parse(bad).is_err(), "{bad:?}");
        }
        let dup = format!("{}{}", generate_key_line("a").unwrap(), generate_key_line("a").unwrap());
        assert!(ChainKeys::parse(&dup).unwrap_err().contains("twice"));
        let gen = ChainKeys::parse(&generate_key_line("2026-11").unwrap()).unwrap();
        assert_eq!(gen.active().id, "2026-11");
    }

    #[test]
    fn a_chain_verifies_across_shards_and_key_rotation() {
        let k = keys();
        let k1 = k.get("k1").unwrap();
        let mut links = extend(k1, 0, None, &[entry("a"), entry("b")]);
        let head = Head {
            shard: 0,
            seq: 2,
            hash: links[1].hash,
        };
        // Rotation: later entries of the same shard use the new key.
        links.extend(extend(k.active(), 0, Some(&head), &[entry("c")]));
        links.extend(extend(k.active(), 3, None, &[entry("d")]));
        assert_eq!(
            links.iter().map(|l| (l.shard, l.seq)).collect::<Vec<_>>(),
            [(0, 1), (0, 2), (0, 3), (3, 1)]
        );
        assert_eq!(links[2].key_id, "k2");
        let (f, heads) = walk(&k, &links);
        assert_eq!(f.total, 0, "{:?}", f.clone().into_sorted());
        assert_eq!(heads.iter().map(|h| (h.shard, h.seq)).collect::<Vec<_>>(), [(0, 3), (3, 1)]);
    }

    #[test]
    fn each_kind_of_tampering_is_found_at_its_entry() {
        let k = keys();
        let links = extend(k.active(), 0, None, &[entry("a"), entry("b"), entry("c"), entry("d")]);

        let mut changed = links.clone();
        changed[1].digest = content_digest(b"other content");
        assert_eq!(problems(walk(&k, &changed).0), [(Problem::BadLink, Some("b".into()))]);

        let mut retimed = links.clone();
        retimed[2].stored_at += chrono::Duration::seconds(1);
        assert_eq!(problems(walk(&k, &retimed).0), [(Problem::BadLink, Some("c".into()))]);

        let deleted: Vec<Link> = links.iter().filter(|l| l.id != "b").cloned().collect();
        assert_eq!(problems(walk(&k, &deleted).0), [(Problem::Gap, Some("c".into()))]);

        // Swapping two entries' positions: both links fail.
        let mut swapped = links.clone();
        swapped.swap(1, 2);
        swapped[1].seq = 2;
        swapped[2].seq = 3;
        assert_eq!(
            problems(walk(&k, &swapped).0),
            [
                (Problem::BadLink, Some("c".into())),
                (Problem::BadLink, Some("b".into())),
                (Problem::BadLink, Some("d".into()))
            ],
            "the two moved entries, and the one after them whose predecessor changed"
        );

        let mut forged = links.clone();
        let other = ChainKey::new("k2", vec![9; 32]).unwrap();
        forged[3].hash = link_hash(&other, &forged[3], &forged[2].hash);
        assert_eq!(problems(walk(&k, &forged).0), [(Problem::BadLink, Some("d".into()))]);

        let mut unknown = links.clone();
        unknown[0].key_id = "k9".into();
        assert_eq!(problems(walk(&k, &unknown).0), [(Problem::UnknownKey, Some("a".into()))]);

        let mut dup = links.clone();
        dup.insert(2, links[1].clone());
        assert_eq!(problems(walk(&k, &dup).0), [(Problem::Duplicate, Some("b".into()))]);

        // A verifier without the signing key finds every link unverifiable, by name.
        let only_old = ChainKeys::parse(&format!("k1:{}", base64::engine::general_purpose::STANDARD.encode([1u8; 32]))).unwrap();
        assert_eq!(walk(&only_old, &links).0.by_problem[&Problem::UnknownKey], 4);
    }

    #[test]
    fn anchors_catch_a_cut_tail_and_a_rewrite() {
        let k = keys();
        let links = extend(k.active(), 0, None, &[entry("a"), entry("b"), entry("c")]);
        let at = |ls: &[Link]| ls.iter().map(|l| ((l.shard, l.seq), l.hash)).collect::<HashMap<_, _>>();
        let anchor = [Head {
            shard: 0,
            seq: 3,
            hash: links[2].hash,
        }];
        assert!(check_anchors(&anchor, &at(&links)).is_empty());
        // The last entry removed: the walk alone sees nothing wrong, the anchor does.
        let cut = &links[..2];
        assert_eq!(walk(&k, cut).0.total, 0);
        assert_eq!(check_anchors(&anchor, &at(cut))[0].problem, Problem::AnchorMismatch);
        let mut rewritten = links.clone();
        rewritten[2].hash = [7; 32];
        assert!(check_anchors(&anchor, &at(&rewritten))[0].detail.contains("rewritten"));
    }

    #[test]
    fn canonical_bytes_are_unambiguous_and_hex_round_trips() {
        let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let d = [0u8; 32];
        assert_ne!(
            canonical(EntryKind::Record, "ab", 0, 1, "k", t, t, &d),
            canonical(EntryKind::Record, "a", 0, 1, "bk", t, t, &d)
        );
        assert_ne!(
            canonical(EntryKind::Record, "a", 0, 1, "k", t, t, &d),
            canonical(EntryKind::Amendment, "a", 0, 1, "k", t, t, &d)
        );
        let h = content_digest(b"x");
        assert_eq!(unhex32(&hex(&h)), Some(h));
        assert_eq!(unhex32("zz"), None);
        let head = Head { shard: 1, seq: 2, hash: h };
        let json = serde_json::to_value(&head).unwrap();
        assert_eq!(json["hash"], hex(&h));
        assert_eq!(serde_json::from_value::<Head>(json).unwrap(), head);
    }

    #[test]
    fn findings_keep_the_first_in_chain_order_and_count_all() {
        let mut f = Findings::default();
        for seq in (1..=(3 * MAX_FINDINGS_KEPT as i64)).rev() {
            f.push(Finding {
                problem: Problem::Gap,
                shard: Some(0),
                seq: Some(seq),
                kind: None,
                id: None,
                detail: String::new(),
            });
        }
        f.push(Finding {
            problem: Problem::Unchained,
            shard: None,
            seq: None,
            kind: None,
            id: Some("x".into()),
            detail: String::new(),
        });
        assert_eq!(f.total, 3 * MAX_FINDINGS_KEPT as u64 + 1);
        let kept = f.into_sorted();
        assert_eq!(kept.len(), MAX_FINDINGS_KEPT);
        assert_eq!(kept[0].seq, Some(1));
    }

    #[test]
    fn fixed_timestamps_sort_as_text() {
        let a = fixed_ts("2025-01-01T00:00:00Z".parse().unwrap());
        let b = fixed_ts("2025-01-01T00:00:00.5Z".parse().unwrap());
        assert_eq!(a, "2025-01-01T00:00:00.000000Z");
        assert!(a < b);
    }
}
