//! The export signing key: an Ed25519 key from a PKCS#8 PEM file, its public key and a short id;
//! and the public key as an auditor reads it from PEM.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::evidence::chain;

/// The export signing key and its id.
pub struct Signer {
    key: SigningKey,
    pub key_id: String,
    pub public_pem: String,
}

/// A short, stable id of a public key: the first 16 hex digits of SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    chain::hex(&Sha256::digest(key.as_bytes())[..8])
}

/// A new Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_signing_key() -> anyhow::Result<(String, String)> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let private = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
    Ok((private.to_string(), public))
}

impl Signer {
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| anyhow::anyhow!("not an Ed25519 private key in PKCS#8 PEM: {e}"))?;
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
        Ok(Self {
            key_id: key_id(&key.verifying_key()),
            public_pem,
            key,
        })
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading the signing key {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| anyhow::anyhow!("signing key {}: {e}", path.display()))
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

pub fn public_key_from_pem(pem: &str) -> anyhow::Result<VerifyingKey> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_pem(pem).map_err(|e| anyhow::anyhow!("not an Ed25519 public key in PEM: {e}"))
}
