//! C2SP tlog-proof: an offline-verifiable proof that an entry is in the log — the entry's
//! index, its inclusion proof and the signed checkpoint it is proven against, as text:
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64>          (optional; here: the entry's bytes, so the leaf can be recomputed)
//! index <decimal>
//! <base64 hash>           (zero or more, the leaf's sibling first)
//!
//! <the checkpoint, a signed note, verbatim>
//! ```
//!
//! The extra data is not authenticated by anything but the proof itself: a verifier hashes it
//! as the leaf and checks the inclusion against the checkpoint's root.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::merkle::Hash;
use super::note::{canonical_decimal, canonical_hash};

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A parsed tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub hashes: Vec<Hash>,
    /// The checkpoint note, verbatim (verify it with [`super::note::Checkpoint::open`]).
    pub checkpoint: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tlog-proof: {0}")]
pub struct ProofFormatError(String);

fn bad(s: impl Into<String>) -> ProofFormatError {
    ProofFormatError(s.into())
}

impl TlogProof {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            s.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses strictly: the header, an optional `extra`, `index` without leading zeros,
    /// canonical 32-byte base64 hashes, an empty line, then a non-empty checkpoint.
    pub fn parse(data: &[u8]) -> Result<Self, ProofFormatError> {
        let split = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| bad("no empty line before the checkpoint"))?;
        let head = std::str::from_utf8(&data[..split]).map_err(|_| bad("the proof lines are not UTF-8"))?;
        let checkpoint = data[split + 2..].to_vec();
        if checkpoint.is_empty() {
            return Err(bad("no checkpoint"));
        }
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(HEADER) {
            return Err(bad(format!("the first line is not {HEADER}")));
        }
        let extra = match lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            Some(e) => {
                let raw = B64.decode(e).map_err(|_| bad("the extra data is not base64"))?;
                lines.next();
                Some(raw)
            }
            None => None,
        };
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or_else(|| bad("no index line"))?;
        let index = canonical_decimal(index).map_err(|r| bad(format!("index {index:?} {r}")))?;
        let hashes = lines
            .map(|l| canonical_hash(l).map_err(|r| bad(format!("proof hash {l:?} {r}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            extra,
            index,
            hashes,
            checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TlogProof {
        TlogProof {
            extra: Some(b"entry bytes".to_vec()),
            index: 73894,
            hashes: vec![[1; 32], [2; 32]],
            checkpoint: b"example.com/log\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n\xe2\x80\x94 example.com/log AAAA\n"
                .to_vec(),
        }
    }

    #[test]
    fn round_trips_in_the_spec_layout() {
        let p = sample();
        let text = p.to_bytes();
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(
            s.starts_with("c2sp.org/tlog-proof@v1\nextra ZW50cnkgYnl0ZXM=\nindex 73894\nAQEB"),
            "{s}"
        );
        assert_eq!(TlogProof::parse(&text).unwrap(), p);
        let bare = TlogProof {
            extra: None,
            index: 0,
            hashes: vec![],
            ..sample()
        };
        assert_eq!(TlogProof::parse(&bare.to_bytes()).unwrap(), bare);
    }

    #[test]
    fn refuses_what_the_spec_does_not_allow() {
        let good = String::from_utf8(sample().to_bytes()).unwrap();
        for (from, to) in [
            ("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
            ("index 73894", "index 073894"),
            ("index 73894", "index -1"),
            ("index 73894", "idx 73894"),
            ("extra ZW50cnkgYnl0ZXM=", "extra !!"),
            ("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AQEB"),
            ("\n\nexample.com", "\nexample.com"),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            assert!(TlogProof::parse(bad.as_bytes()).is_err(), "{to}");
        }
        let cut = good.split("\n\n").next().unwrap().to_string() + "\n\n";
        assert!(TlogProof::parse(cut.as_bytes()).is_err(), "no checkpoint");
    }
}
