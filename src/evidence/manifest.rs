//! The signed manifest of an export: what Data Storage signs after the last row (the file's
//! SHA-256 and size, the period, counts, the chain's heads, the log's evidence), and its check
//! against a public key, which is all an auditor needs to hold the file to it.

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::chain::Head;
use super::export_log::LogEvidence;
use super::signing::key_id;

/// What a manifest's `format` field says.
pub const MANIFEST_FORMAT: &str = "audit-guard-export-manifest/v1";

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ndjson" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn extension(&self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub amendments: u64,
    pub break_glass_events: u64,
    /// Rows without a chain link (exported as stored; `verify` reports them).
    pub unchained: u64,
}

/// What is signed: everything an auditor needs to hold the file to.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub export_id: String,
    pub created_at: DateTime<Utc>,
    /// The user Data Storage authenticated for the request.
    pub created_by: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub content_format: Format,
    /// Hex SHA-256 of the exported bytes.
    pub content_sha256: String,
    pub content_bytes: u64,
    pub counts: Counts,
    /// The chain's heads when the export ended: anchors for a later `verify --anchor`.
    pub chain_heads: Vec<Head>,
    pub signing_key_id: String,
    /// The transparency log's evidence for the rows (docs/transparency-log.md, "Exports");
    /// absent when this Data Storage signs no checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogEvidence>,
}

/// The manifest of a finished export and its signature.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SignedManifest {
    pub export_id: String,
    /// The exact signed bytes (a JSON document, kept as text so nothing re-serialises it).
    pub manifest: String,
    /// Base64 of the 64-byte Ed25519 signature over `manifest`.
    pub signature: String,
}

/// Checks a signed manifest against a public key: the manifest, if the signature is its.
pub fn verify_manifest(signed: &str, signature: &[u8], public: &VerifyingKey) -> Result<Manifest, String> {
    let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|e| format!("not an Ed25519 signature: {e}"))?;
    public
        .verify_strict(signed.as_bytes(), &sig)
        .map_err(|_| "the signature does not match the manifest and this public key".to_string())?;
    let m: Manifest = serde_json::from_str(signed).map_err(|e| format!("the manifest is not a manifest: {e}"))?;
    if m.format != MANIFEST_FORMAT {
        return Err(format!("unknown manifest format {:?}", m.format));
    }
    if m.signing_key_id != key_id(public) {
        return Err(format!(
            "the manifest names signing key {} but the public key given is {}",
            m.signing_key_id,
            key_id(public)
        ));
    }
    Ok(m)
}

#[cfg(test)]
impl Manifest {
    /// The manifest of an export of `content` that `signer` would sign, for tests.
    pub fn for_test(signer: &super::signing::Signer, format: Format, content: &[u8], counts: Counts) -> Self {
        Self {
            format: MANIFEST_FORMAT.into(),
            export_id: "e".into(),
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            created_by: "auditor".into(),
            since: None,
            until: None,
            content_format: format,
            content_sha256: super::chain::hex(&<sha2::Sha256 as sha2::Digest>::digest(content)),
            content_bytes: content.len() as u64,
            counts,
            chain_heads: vec![],
            signing_key_id: signer.key_id.clone(),
            log: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::signing::{generate_signing_key, public_key_from_pem, Signer};
    use super::*;

    #[test]
    fn a_signed_manifest_verifies_only_unchanged_and_with_its_key() {
        let (private, public) = generate_signing_key().unwrap();
        let signer = Signer::from_pem(&private).unwrap();
        let public = public_key_from_pem(&public).unwrap();
        let m = Manifest::for_test(&signer, Format::Ndjson, b"", Counts::default());
        let text = serde_json::to_string(&m).unwrap();
        let sig = signer.sign(text.as_bytes());
        assert_eq!(verify_manifest(&text, &sig, &public).unwrap(), m);
        assert!(verify_manifest(&text.replace("auditor", "auditos"), &sig, &public).is_err());
        let (_, other) = generate_signing_key().unwrap();
        assert!(verify_manifest(&text, &sig, &public_key_from_pem(&other).unwrap()).is_err());
        assert!(verify_manifest(&text, &sig[..10], &public).is_err());
        assert!(Signer::from_pem("not a key").is_err());
    }
}
