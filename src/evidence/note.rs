//! Signed notes (C2SP signed-note), the checkpoints they carry (C2SP tlog-checkpoint), and
//! witness cosignatures (C2SP tlog-cosignature, Ed25519).
//!
//! A note is UTF-8 text ending in a newline, a blank line, then one line per signature:
//! `— <key name> <base64(key ID ‖ signature)>`. The key ID is the first four bytes of
//! `SHA-256(name ‖ "\n" ‖ alg ‖ public key)`, big-endian; alg is 0x01 for a plain Ed25519
//! signature over the text and 0x04 for a timestamped cosignature. A verifier key is written
//! `<name>+<key ID in 8 hex digits>+<base64(alg ‖ public key)>`; a signer key is the same with
//! `PRIVATE+KEY+` in front and the 32-byte Ed25519 seed in place of the public key.
//!
//! A checkpoint is a note whose text is the log's origin, its size in decimal, its root hash
//! in base64, and optional extension lines, each ending in a newline.
//!
//! Parsing is strict: anything the specs do not allow is refused with a reason, so that two
//! implementations never read one note two ways.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// Plain Ed25519 signature over the note text.
pub const ALG_ED25519: u8 = 0x01;
/// Timestamped Ed25519 cosignature (tlog-cosignature).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// More signatures than this make a note malformed (what Go's reader allows too).
pub const MAX_SIGNATURES: usize = 100;
/// The first byte sequence of every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed key: {0}")]
    BadKey(String),
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
    #[error("no signature by {name} (key ID {key_id:08x}) on the note")]
    NotSigned { name: String, key_id: u32 },
    #[error("the signature by {name} (key ID {key_id:08x}) does not verify")]
    BadSignature { name: String, key_id: u32 },
    #[error("the checkpoint's origin is {got:?}, not {want:?}")]
    WrongOrigin { got: String, want: String },
}

fn malformed(s: impl Into<String>) -> NoteError {
    NoteError::Malformed(s.into())
}

/// A key name: non-empty, no Unicode white space, no `+`.
pub fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::BadKey(format!(
            "name {name:?}: a key name is non-empty, without spaces or +"
        )));
    }
    Ok(())
}

/// The key ID of a public key of algorithm `alg` under `name`.
pub fn key_id(name: &str, alg: u8, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A public key that checks signatures (alg 0x01) or cosignatures (alg 0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub alg: u8,
    pub key_id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    pub fn new(name: &str, alg: u8, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey(format!("algorithm {alg:#04x} is not supported")));
        }
        Ok(Self {
            name: name.to_string(),
            alg,
            key_id: key_id(name, alg, key.as_bytes()),
            key,
        })
    }

    /// `<name>+<hex key ID>+<base64(alg ‖ public key)>`; the key ID must match the key.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, id, alg, public) = split_key(s, "verifier key")?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::BadKey("verifier key: not an Ed25519 public key".into()))?;
        let v = Self::new(name, alg, key)?;
        if v.key_id != id {
            return Err(NoteError::BadKey("verifier key: the key ID does not match the name and key".into()));
        }
        Ok(v)
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.key
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.alg];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, B64.encode(raw))
    }
}

/// `<name>+<key ID>+<base64(alg ‖ 32 bytes)>` split into its parts (checked by the caller).
fn split_key<'a>(s: &'a str, what: &str) -> Result<(&'a str, u32, u8, [u8; 32]), NoteError> {
    let bad = |r: &str| NoteError::BadKey(format!("{what}: {r}"));
    // The name holds no `+`; standard base64 may, so the key is everything after the ID.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <name>+<key ID>+<base64 key>"));
    };
    let id = parse_key_id(id).ok_or_else(|| bad("the key ID is not 8 lowercase hex digits"))?;
    let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
    let [alg, key @ ..] = raw.as_slice() else {
        return Err(bad("the key is empty"));
    };
    let key: [u8; 32] = key.try_into().map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
    Ok((name, id, *alg, key))
}

fn parse_key_id(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A private key that signs notes (alg 0x01) or cosignatures (alg 0x04).
#[derive(Clone)]
pub struct SignerKey {
    verifier: VerifierKey,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("SignerKey")
            .field("verifier", &self.verifier.to_string())
            .finish_non_exhaustive()
    }
}

impl SignerKey {
    pub fn new(name: &str, alg: u8, key: SigningKey) -> Result<Self, NoteError> {
        Ok(Self {
            verifier: VerifierKey::new(name, alg, key.verifying_key())?,
            key,
        })
    }

    /// A fresh random key.
    pub fn generate(name: &str, alg: u8) -> Result<Self, NoteError> {
        Self::new(name, alg, SigningKey::from_bytes(&rand::random()))
    }

    /// `PRIVATE+KEY+<name>+<hex key ID>+<base64(alg ‖ seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .trim_end_matches('\n')
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::BadKey("signer key: expected PRIVATE+KEY+<name>+<key ID>+<base64 key>".into()))?;
        let (name, id, alg, seed) = split_key(rest, "signer key")?;
        let k = Self::new(name, alg, SigningKey::from_bytes(&seed))?;
        if k.verifier.key_id != id {
            return Err(NoteError::BadKey("signer key: the key ID does not match the name and key".into()));
        }
        Ok(k)
    }

    /// The private key in the signer key format (secret: for a key file only).
    pub fn to_secret_string(&self) -> String {
        let mut raw = vec![self.verifier.alg];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.verifier.name,
            self.verifier.key_id,
            B64.encode(raw)
        )
    }

    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }
}

/// One signature line: who, which key, and the signature bytes (after the key ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub sig: Vec<u8>,
}

impl NoteSignature {
    fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.sig);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }
}

/// A parsed note: its text (with the final newline) and its signatures, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

/// Text a note may carry: valid UTF-8 (a `&str` is), no ASCII control character but the
/// newline, ending in a newline, no blank line at the end.
fn check_text(text: &str) -> Result<(), NoteError> {
    if let Some(c) = text.chars().find(|c| (*c as u32) < 0x20 && *c != '\n') {
        return Err(malformed(format!("control character {:#04x} in the text", c as u32)));
    }
    if !text.ends_with('\n') {
        return Err(malformed("the text does not end with a newline"));
    }
    if text.ends_with("\n\n") || text == "\n" {
        return Err(malformed("the text ends with a blank line"));
    }
    Ok(())
}

impl Note {
    /// A note of `text` (which must end with a newline) with no signature yet.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        Ok(Self {
            text: text.to_string(),
            signatures: vec![],
        })
    }

    /// Parses a signed note strictly: every byte must belong to the text or a well-formed
    /// signature line, and there must be at least one signature.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let msg = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
        if let Some(c) = msg.chars().find(|c| (*c as u32) < 0x20 && *c != '\n') {
            return Err(malformed(format!("control character {:#04x}", c as u32)));
        }
        let split = msg.rfind("\n\n").ok_or_else(|| malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
        check_text(text)?;
        if sigs.is_empty() {
            return Err(malformed("no signature lines"));
        }
        if !sigs.ends_with('\n') {
            return Err(malformed("the last signature line does not end with a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let body = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| malformed(format!("signature line {line:?} does not start with \"— \"")))?;
            let (name, b64) = body
                .split_once(' ')
                .ok_or_else(|| malformed(format!("signature line {line:?} has no space after the name")))?;
            check_name(name).map_err(|_| malformed(format!("signature line {line:?}: bad key name")))?;
            let raw = B64
                .decode(b64)
                .map_err(|_| malformed(format!("signature line {line:?}: not base64")))?;
            if raw.len() < 5 {
                return Err(malformed(format!("signature line {line:?}: too short")));
            }
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
                sig: raw[4..].to_vec(),
            });
            if signatures.len() > MAX_SIGNATURES {
                return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
            }
        }
        Ok(Self {
            text: text.to_string(),
            signatures,
        })
    }

    /// The note as bytes: text, blank line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out.into_bytes()
    }

    /// Adds a plain Ed25519 signature (alg 0x01) by `key`.
    pub fn sign(&mut self, key: &SignerKey) -> Result<(), NoteError> {
        if key.verifier.alg != ALG_ED25519 {
            return Err(NoteError::BadKey("a note signature needs an Ed25519 (0x01) key".into()));
        }
        let sig = key.key.sign(self.text.as_bytes());
        self.signatures.push(NoteSignature {
            name: key.verifier.name.clone(),
            key_id: key.verifier.key_id,
            sig: sig.to_bytes().to_vec(),
        });
        Ok(())
    }

    /// Adds a cosignature (alg 0x04) by `key`, made at `timestamp` (POSIX seconds).
    pub fn cosign(&mut self, key: &SignerKey, timestamp: u64) -> Result<(), NoteError> {
        if key.verifier.alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey("a cosignature needs a cosignature (0x04) key".into()));
        }
        if timestamp > i64::MAX as u64 {
            return Err(NoteError::BadKey("a cosignature's timestamp is at most 2^63-1".into()));
        }
        let sig = key.key.sign(&cosigned_message(&self.text, timestamp));
        let mut raw = timestamp.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        self.signatures.push(NoteSignature {
            name: key.verifier.name.clone(),
            key_id: key.verifier.key_id,
            sig: raw,
        });
        Ok(())
    }

    fn signatures_by<'a>(&'a self, key: &'a VerifierKey) -> impl Iterator<Item = &'a NoteSignature> + 'a {
        self.signatures.iter().filter(move |s| s.name == key.name && s.key_id == key.key_id)
    }

    /// Checks the note carries a valid signature by `key` (alg 0x01). Signature lines by
    /// other keys are ignored, as the spec wants; a line that claims this key and does not
    /// verify is an error.
    pub fn verify(&self, key: &VerifierKey) -> Result<(), NoteError> {
        if key.alg != ALG_ED25519 {
            return Err(NoteError::BadKey("a note signature is checked with an Ed25519 (0x01) key".into()));
        }
        self.check(key, |s| {
            let sig = Signature::from_slice(&s.sig).ok()?;
            key.key.verify_strict(self.text.as_bytes(), &sig).ok()
        })
        .map(|_| ())
    }

    /// Checks the note carries a valid cosignature by `key` (alg 0x04); returns its
    /// timestamp.
    pub fn verify_cosignature(&self, key: &VerifierKey) -> Result<u64, NoteError> {
        if key.alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey("a cosignature is checked with a cosignature (0x04) key".into()));
        }
        self.check(key, |s| {
            let (ts, sig) = s.sig.split_first_chunk::<8>()?;
            let ts = u64::from_be_bytes(*ts);
            if ts > i64::MAX as u64 {
                return None;
            }
            let sig = Signature::from_slice(sig).ok()?;
            key.key.verify_strict(&cosigned_message(&self.text, ts), &sig).ok()?;
            Some(ts)
        })
    }

    fn check<T>(&self, key: &VerifierKey, ok: impl Fn(&NoteSignature) -> Option<T>) -> Result<T, NoteError> {
        let mut found = None;
        for s in self.signatures_by(key) {
            match ok(s) {
                Some(v) => found = found.or(Some(v)),
                None => {
                    return Err(NoteError::BadSignature {
                        name: key.name.clone(),
                        key_id: key.key_id,
                    })
                }
            }
        }
        found.ok_or_else(|| NoteError::NotSigned {
            name: key.name.clone(),
            key_id: key.key_id,
        })
    }
}

/// What an Ed25519 cosignature signs: a header line, the time, then the note text.
fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A number as checkpoints and proofs write it: decimal, no sign, no leading zeros.
pub fn canonical_decimal(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err("is not a decimal without leading zeros");
    }
    s.parse().map_err(|_| "is too large")
}

/// A hash as checkpoints and proofs write it: exactly 32 bytes in canonical standard base64.
pub fn canonical_hash(s: &str) -> Result<Hash, &'static str> {
    let raw = B64.decode(s).map_err(|_| "is not base64")?;
    let h: Hash = raw.as_slice().try_into().map_err(|_| "is not 32 bytes")?;
    if B64.encode(h) != s {
        return Err("is not in canonical base64");
    }
    Ok(h)
}

/// A checkpoint: which log, how many entries, their root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, without their newline.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint body (a note's text) strictly.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |r: String| NoteError::BadCheckpoint(r);
        check_text(text).map_err(|e| bad(e.to_string()))?;
        let mut lines = text[..text.len() - 1].split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        let size = lines.next().ok_or_else(|| bad("no tree size line".into()))?;
        let size = canonical_decimal(size).map_err(|r| bad(format!("tree size {size:?} {r}")))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line".into()))?;
        let root_hash = canonical_hash(root).map_err(|r| bad(format!("root hash {root:?} {r}")))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an empty extension line".into()));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root: root_hash,
            extensions,
        })
    }

    /// A signed checkpoint note by `key`.
    pub fn sign(&self, key: &SignerKey) -> Result<Note, NoteError> {
        check_name(&self.origin).map_err(|_| NoteError::BadCheckpoint("the origin is not a valid name".into()))?;
        let mut note = Note::new(&self.to_text())?;
        note.sign(key)?;
        Ok(note)
    }

    /// Parses a signed checkpoint, checks the log's signature by `key` and that it is the
    /// log named `origin`.
    pub fn open(bytes: &[u8], key: &VerifierKey, origin: &str) -> Result<(Self, Note), NoteError> {
        let note = Note::parse(bytes)?;
        note.verify(key)?;
        let cp = Self::parse(&note.text)?;
        if cp.origin != origin {
            return Err(NoteError::WrongOrigin {
                got: cp.origin,
                want: origin.to_string(),
            });
        }
        Ok((cp, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn log_key() -> SignerKey {
        SignerKey::new("example.com/log", ALG_ED25519, seed(7)).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".into(),
            size: 1537,
            root: [0xab; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn key_strings_round_trip_and_id_is_checked() {
        let k = log_key();
        let v = k.verifier().to_string();
        assert!(v.starts_with("example.com/log+"));
        assert_eq!(VerifierKey::parse(&v).unwrap(), *k.verifier());
        let s = k.to_secret_string();
        assert!(s.starts_with("PRIVATE+KEY+example.com/log+"));
        let back = SignerKey::parse(&s).unwrap();
        assert_eq!(back.verifier(), k.verifier());
        // A different key ID, name, algorithm byte or key length is refused.
        let parts: Vec<&str> = v.split('+').collect();
        let other_id = format!("{}+{:08x}+{}", parts[0], k.verifier().key_id ^ 1, parts[2]);
        assert!(VerifierKey::parse(&other_id).is_err());
        assert!(VerifierKey::parse(&format!("other+{}+{}", parts[1], parts[2])).is_err());
        assert!(VerifierKey::parse(&format!("{}+{}", parts[0], parts[1])).is_err());
        assert!(VerifierKey::parse(&format!("{}+{}+AQID", parts[0], parts[1])).is_err());
        assert!(VerifierKey::parse(&format!("{}+{}+{}+x", parts[0], parts[1], parts[2])).is_err());
        assert_eq!(parse_key_id("ABCDEF01"), None);
        assert_eq!(parse_key_id("abcdef01"), Some(0xabcdef01));
        assert_eq!(parse_key_id("abcdef0"), None);
        assert!(SignerKey::parse(&v).is_err());
        assert!(check_name("a b").is_err() && check_name("a+b").is_err() && check_name("").is_err());
    }

    #[test]
    fn keys_whose_base64_holds_a_plus_round_trip() {
        let mut plus = 0;
        for seed in 0..64u8 {
            let k = SignerKey::new("example.com/log", ALG_ED25519, SigningKey::from_bytes(&[seed; 32])).unwrap();
            let (v, s) = (k.verifier().to_string(), k.to_secret_string());
            plus += usize::from(v.matches('+').count() > 2) + usize::from(s.matches('+').count() > 4);
            assert_eq!(VerifierKey::parse(&v).unwrap(), *k.verifier(), "{v}");
            assert_eq!(SignerKey::parse(&s).unwrap().verifier(), k.verifier());
        }
        assert!(plus > 0, "some of these keys have a + in their base64");
    }

    #[test]
    fn key_id_known_answer() {
        // Computed by hand from the definition: SHA-256("n\n" ‖ 0x01 ‖ 32 zero bytes)[:4].
        let mut h = Sha256::new();
        h.update(b"n\n\x01");
        h.update([0u8; 32]);
        let d = h.finalize();
        assert_eq!(key_id("n", ALG_ED25519, &[0; 32]), u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
        assert_ne!(key_id("n", ALG_ED25519, &[0; 32]), key_id("n", ALG_COSIGNATURE_V1, &[0; 32]));
    }

    #[test]
    fn signed_checkpoint_round_trips() {
        let k = log_key();
        let note = checkpoint().sign(&k).unwrap();
        let bytes = note.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("example.com/log\n1537\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\n\u{2014} example.com/log "));
        let (cp, back) = Checkpoint::open(&bytes, k.verifier(), "example.com/log").unwrap();
        assert_eq!(cp, checkpoint());
        assert_eq!(back, note);
        assert_eq!(back.to_bytes(), bytes);
        assert!(matches!(
            Checkpoint::open(&bytes, k.verifier(), "example.com/other"),
            Err(NoteError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let k = log_key();
        let bytes = checkpoint().sign(&k).unwrap().to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Checkpoint::open(&bad, k.verifier(), "example.com/log").is_err(),
                "byte {i} changed and still accepted"
            );
        }
    }

    #[test]
    fn other_keys_are_ignored_but_a_bad_claim_is_not() {
        let k = log_key();
        let other = SignerKey::new("example.com/other", ALG_ED25519, seed(9)).unwrap();
        let mut note = checkpoint().sign(&other).unwrap();
        assert!(matches!(note.verify(k.verifier()), Err(NoteError::NotSigned { .. })));
        note.sign(&k).unwrap();
        note.verify(k.verifier()).unwrap();
        note.verify(other.verifier()).unwrap();
        // A line with the right name and key ID and a wrong signature is an error even if
        // another line is valid.
        let mut forged = note.clone();
        let mut bad = forged.signatures[1].clone();
        bad.sig[0] ^= 1;
        forged.signatures.push(bad);
        assert!(matches!(forged.verify(k.verifier()), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn malformed_notes_are_refused() {
        let k = log_key();
        let good = String::from_utf8(checkpoint().sign(&k).unwrap().to_bytes()).unwrap();
        let sig_line = good.split("\n\n").nth(1).unwrap().to_string();
        let cases = [
            ("no blank line", good.replace("\n\n", "\n")),
            ("no final newline", good.trim_end_matches('\n').to_string()),
            ("no signatures", format!("{}\n\n", good.split("\n\n").next().unwrap())),
            ("hyphen, not em dash", good.replace('\u{2014}', "-")),
            ("tab in text", good.replacen("1537", "15\t37", 1)),
            ("carriage return", good.replacen("1537\n", "1537\r\n", 1)),
            (
                "no space after name",
                good.replace("\u{2014} example.com/log ", "\u{2014} example.com/log"),
            ),
            ("bad base64", good.replace(&sig_line, "\u{2014} example.com/log !!!!\n")),
            ("short signature", good.replace(&sig_line, "\u{2014} example.com/log AAAA\n")),
        ];
        for (what, note) in cases {
            assert!(Note::parse(note.as_bytes()).is_err(), "{what}: accepted");
        }
        assert!(Note::parse(&[0xff, b'\n', b'\n']).is_err());
        let many = format!("{}{}", good, sig_line.repeat(MAX_SIGNATURES));
        assert!(Note::parse(many.as_bytes()).is_err());
        // A second blank line makes everything before it the text: well formed, but the
        // signature no longer covers that text.
        let moved = Note::parse(format!("{good}\n{sig_line}").as_bytes()).unwrap();
        assert!(matches!(moved.verify(k.verifier()), Err(NoteError::BadSignature { .. })));
        assert!(Note::new("no newline").is_err());
        assert!(Note::new("ends blank\n\n").is_err());
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let root = B64.encode([1u8; 32]);
        for (what, text) in [
            ("empty origin", format!("\n1\n{root}\n")),
            ("leading zero", format!("o\n01\n{root}\n")),
            ("sign", format!("o\n+1\n{root}\n")),
            ("no size", "o\n".to_string()),
            ("no root", "o\n1\n".to_string()),
            ("short root", format!("o\n1\n{}\n", B64.encode([1u8; 31]))),
            ("unpadded root", format!("o\n1\n{}\n", root.trim_end_matches('='))),
            ("empty extension", format!("o\n1\n{root}\n\next\n")),
            ("too large", format!("o\n18446744073709551616\n{root}\n")),
        ] {
            assert!(Checkpoint::parse(&text).is_err(), "{what}: accepted");
        }
        let cp = Checkpoint::parse(&format!("o\n0\n{root}\nextension one\n")).unwrap();
        assert_eq!(cp.size, 0);
        assert_eq!(cp.extensions, vec!["extension one".to_string()]);
        assert_eq!(Checkpoint::parse(&cp.to_text()).unwrap(), cp);
    }

    #[test]
    fn cosignatures() {
        let log = log_key();
        let witness = SignerKey::new("witness.example/w1", ALG_COSIGNATURE_V1, seed(3)).unwrap();
        let mut note = checkpoint().sign(&log).unwrap();
        assert!(note.sign(&witness).is_err(), "a cosigner key does not make plain signatures");
        assert!(note.cosign(&log, 1).is_err(), "a log key does not cosign");
        note.cosign(&witness, 1_679_315_147).unwrap();
        let back = Note::parse(&note.to_bytes()).unwrap();
        assert_eq!(back.verify_cosignature(witness.verifier()).unwrap(), 1_679_315_147);
        back.verify(log.verifier()).unwrap();
        // The cosigned message is the spec's: header, time line, then the checkpoint text.
        let raw = &back.signatures[1].sig;
        assert_eq!(&raw[..8], &1_679_315_147u64.to_be_bytes());
        let sig = Signature::from_slice(&raw[8..]).unwrap();
        let msg = format!("cosignature/v1\ntime 1679315147\n{}", checkpoint().to_text());
        witness.verifier().public().verify_strict(msg.as_bytes(), &sig).unwrap();
        // Another timestamp under the same signature does not verify.
        let mut moved = back.clone();
        moved.signatures[1].sig[7] ^= 1;
        assert!(matches!(
            moved.verify_cosignature(witness.verifier()),
            Err(NoteError::BadSignature { .. })
        ));
        // The same public key under the plain algorithm has another key ID: not a match.
        let plain = VerifierKey::new("witness.example/w1", ALG_ED25519, *witness.verifier().public()).unwrap();
        assert!(matches!(back.verify(&plain), Err(NoteError::NotSigned { .. })));
    }
}
