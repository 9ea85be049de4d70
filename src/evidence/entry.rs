//! The log entry: the bytes one stored item contributes to the transparency log, specified
//! in docs/transparency-log.md (test vectors there are checked here).
//!
//! ```text
//! entry   = version kind id cr_uid stored_at content_sha256
//! version = 0x01                                   (1 byte)
//! kind    = 0x01 record | 0x02 amendment | 0x03 break-glass event (1 byte)
//! id, cr_uid, stored_at = u16 big-endian length ‖ UTF-8 bytes
//! content_sha256 = 32 bytes
//! ```
//!
//! `stored_at` is RFC 3339 in UTC with exactly six fractional digits and `Z` (as Data
//! Storage writes times everywhere). `content_sha256` is the SHA-256 of the stored JSON text,
//! byte for byte — the text every export carries verbatim — so anyone holding an export can
//! rebuild the entry, its leaf hash, and check it against a checkpoint. The encoding is
//! canonical: decoding refuses anything `encode` would not produce.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::merkle::{leaf_hash, Hash};

pub const VERSION: u8 = 1;
/// Longest id or CR uid accepted (far above what Kubernetes or Data Storage produce).
pub const MAX_FIELD: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Record,
    Amendment,
    BreakGlass,
}

impl Kind {
    pub fn byte(self) -> u8 {
        match self {
            Self::Record => 1,
            Self::Amendment => 2,
            Self::BreakGlass => 3,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Record),
            2 => Some(Self::Amendment),
            3 => Some(Self::BreakGlass),
            _ => None,
        }
    }
}

/// One log entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// The record's id, the amendment's id, or the break-glass event's id.
    pub id: String,
    /// The SignalProcessing's `metadata.uid` the item is about; empty when it carries none.
    pub cr_uid: String,
    pub stored_at: DateTime<Utc>,
    pub content_sha256: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("log entry: {0}")]
    Malformed(String),
}

fn bad(s: impl Into<String>) -> EntryError {
    EntryError::Malformed(s.into())
}

/// RFC 3339, UTC, microseconds, `Z`: 27 bytes for every year 0000–9999.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    // Callers check lengths first, so the field always fits.
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

impl Entry {
    /// An entry for `content` (the stored JSON text).
    pub fn new(kind: Kind, id: &str, cr_uid: &str, stored_at: DateTime<Utc>, content: &[u8]) -> Self {
        Self {
            kind,
            id: id.to_string(),
            cr_uid: cr_uid.to_string(),
            stored_at,
            content_sha256: Sha256::digest(content).into(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        if self.id.is_empty() || self.id.len() > MAX_FIELD {
            return Err(bad(format!("the id is 1 to {MAX_FIELD} bytes, not {}", self.id.len())));
        }
        if self.cr_uid.len() > MAX_FIELD {
            return Err(bad(format!("the CR uid is at most {MAX_FIELD} bytes")));
        }
        let time = time_text(self.stored_at);
        if time.len() != 27 {
            return Err(bad(format!("stored_at {time} is outside years 0000-9999")));
        }
        let mut out = Vec::with_capacity(2 + 6 + self.id.len() + self.cr_uid.len() + 27 + 32);
        out.push(VERSION);
        out.push(self.kind.byte());
        put(&mut out, self.id.as_bytes());
        put(&mut out, self.cr_uid.as_bytes());
        put(&mut out, time.as_bytes());
        out.extend_from_slice(&self.content_sha256);
        Ok(out)
    }

    /// The entry's Merkle leaf hash.
    pub fn leaf_hash(&self) -> Result<Hash, EntryError> {
        Ok(leaf_hash(&self.encode()?))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let [version, kind, rest @ ..] = bytes else {
            return Err(bad("shorter than its header"));
        };
        if *version != VERSION {
            return Err(bad(format!("version {version} is not supported (only {VERSION})")));
        }
        let kind = Kind::from_byte(*kind).ok_or_else(|| bad(format!("unknown kind {kind}")))?;
        let mut rest = rest;
        let mut field = |name: &str| -> Result<String, EntryError> {
            let [a, b, tail @ ..] = rest else {
                return Err(bad(format!("{name}: truncated length")));
            };
            let len = usize::from(u16::from_be_bytes([*a, *b]));
            if tail.len() < len {
                return Err(bad(format!("{name}: truncated")));
            }
            let s = std::str::from_utf8(&tail[..len]).map_err(|_| bad(format!("{name}: not UTF-8")))?;
            rest = &tail[len..];
            Ok(s.to_string())
        };
        let id = field("id")?;
        let cr_uid = field("cr_uid")?;
        let time = field("stored_at")?;
        let digest: Hash = rest
            .try_into()
            .map_err(|_| bad(format!("content_sha256: {} bytes where 32 end the entry", rest.len())))?;
        let stored_at = DateTime::parse_from_rfc3339(&time)
            .map_err(|e| bad(format!("stored_at {time:?}: {e}")))?
            .with_timezone(&Utc);
        let e = Self {
            kind,
            id,
            cr_uid,
            stored_at,
            content_sha256: digest,
        };
        // One spelling per entry: what encode would write, byte for byte.
        if e.encode()? != bytes {
            return Err(bad("not in canonical form (time must be UTC with six fractional digits and Z)"));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn vector_one() -> Entry {
        Entry::new(
            Kind::Record,
            "rec-1",
            "0b0a6f8e-3c2d-4e5f-8a9b-1c2d3e4f5a6b",
            DateTime::parse_from_rfc3339("2026-12-07T06:38:32.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            br#"{"id":"rec-1"}"#,
        )
    }

    /// The test vectors of docs/transparency-log.md; the document quotes these exact values.
    #[test]
    fn documented_vectors() {
        let doc = include_str!("../../docs/transparency-log.md");
        let e = vector_one();
        let bytes = e.encode().unwrap();
        assert_eq!(hex(&e.content_sha256), hex(&Sha256::digest(br#"{"id":"rec-1"}"#)));
        for want in [hex(&bytes), hex(&e.leaf_hash().unwrap())] {
            assert!(doc.contains(&want), "docs/transparency-log.md lacks {want}");
        }
        let e2 = Entry::new(
            Kind::BreakGlass,
            "bg-7",
            "",
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc),
            b"{}",
        );
        for want in [hex(&e2.encode().unwrap()), hex(&e2.leaf_hash().unwrap())] {
            assert!(doc.contains(&want), "docs/transparency-log.md lacks {want}");
        }
    }

    #[test]
    fn layout() {
        let bytes = vector_one().encode().unwrap();
        assert_eq!(&bytes[..2], &[1, 1]);
        assert_eq!(&bytes[2..4], &[0, 5]);
        assert_eq!(&bytes[4..9], b"rec-1");
        assert_eq!(&bytes[9..11], &[0, 36]);
        assert_eq!(&bytes[47..49], &[0, 27]);
        assert_eq!(&bytes[49..76], b"2026-12-07T06:38:32.123456Z");
        assert_eq!(bytes.len(), 76 + 32);
        assert_eq!(Entry::decode(&bytes).unwrap(), vector_one());
    }

    #[test]
    fn whole_seconds_still_carry_six_digits() {
        let e = Entry::new(
            Kind::Amendment,
            "a",
            "u",
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05+02:00")
                .unwrap()
                .with_timezone(&Utc),
            b"x",
        );
        let bytes = e.encode().unwrap();
        assert!(bytes.windows(27).any(|w| w == b"2026-01-02T01:04:05.000000Z"));
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn non_canonical_and_truncated_entries_are_refused() {
        let good = vector_one().encode().unwrap();
        assert!(Entry::decode(&good[..good.len() - 1]).is_err());
        let mut longer = good.clone();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err());
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(Entry::decode(&v2).is_err());
        let mut k = good.clone();
        k[1] = 4;
        assert!(Entry::decode(&k).is_err());
        // The same instant spelt with an offset is not the canonical entry.
        let offset = String::from_utf8_lossy(&good).replace("2026-12-07T06:38:32.123456Z", "2026-12-07T07:38:32.123456+01:00");
        assert!(Entry::decode(offset.as_bytes()).is_err());
        let mut bad_utf8 = good.clone();
        bad_utf8[4] = 0xff;
        assert!(Entry::decode(&bad_utf8).is_err());
        assert!(Entry::decode(&[1]).is_err());
        let no_id = Entry {
            id: String::new(),
            ..vector_one()
        };
        assert!(no_id.encode().is_err());
        let long_uid = Entry {
            cr_uid: "u".repeat(MAX_FIELD + 1),
            ..vector_one()
        };
        assert!(long_uid.encode().is_err());
    }

    #[test]
    fn every_field_changes_the_leaf() {
        let base = vector_one();
        let variants = [
            Entry {
                kind: Kind::Amendment,
                ..base.clone()
            },
            Entry {
                id: "rec-2".into(),
                ..base.clone()
            },
            Entry {
                cr_uid: String::new(),
                ..base.clone()
            },
            Entry {
                stored_at: base.stored_at + chrono::Duration::microseconds(1),
                ..base.clone()
            },
            Entry {
                content_sha256: [0; 32],
                ..base.clone()
            },
        ];
        let h = base.leaf_hash().unwrap();
        for v in variants {
            assert_ne!(v.leaf_hash().unwrap(), h, "{v:?}");
        }
        // Moving bytes between fields cannot produce the same entry: lengths are inside.
        let a = Entry {
            id: "ab".into(),
            cr_uid: "c".into(),
            ..base.clone()
        };
        let b = Entry {
            id: "a".into(),
            cr_uid: "bc".into(),
            ..base
        };
        assert_ne!(a.encode().unwrap(), b.encode().unwrap());
    }
}
