//! `log-witness`: a transparency log witness (C2SP tlog-witness) an auditor runs in their own
//! trust domain. The decisions are [`crate::evidence::witness::check`]; this keeps the latest
//! cosigned checkpoint of each log in a state directory and answers `POST /add-checkpoint`.
//!
//! Checking a request against the stored checkpoint and storing the new one happen under one
//! lock, and the file is replaced by rename only after it is written and synced: a restart finds
//! either the old or the new checkpoint, never a mix, and never cosigns behind a rollback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::{LogPublicKeyArg, LogWitnessArgs};
use crate::evidence::note::{Checkpoint, SignerKey, VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use crate::evidence::witness::{self, AddCheckpoint, Logs, Refusal, SIZE_CONTENT_TYPE};

/// A request body larger than this is refused (a checkpoint and 63 hashes are a few KiB).
const MAX_BODY: usize = 64 * 1024;

pub struct Witness {
    key: SignerKey,
    logs: Logs,
    dir: PathBuf,
    latest: Mutex<HashMap<String, Checkpoint>>,
}

/// The file keeping `origin`'s latest cosigned checkpoint: a hash of the origin, so any origin
/// makes a safe file name.
fn state_file(dir: &Path, origin: &str) -> PathBuf {
    let h = Sha256::digest(origin.as_bytes());
    dir.join(format!("{}.checkpoint", hex(&h[..16])))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl Witness {
    /// Loads the key, the logs' keys and the stored checkpoints (each must still verify with
    /// its log's key: a state file that does not is an error, not a fresh start).
    pub fn load(key: SignerKey, logs: Logs, dir: &Path) -> anyhow::Result<Self> {
        if key.verifier().alg != ALG_COSIGNATURE_V1 {
            bail!("the witness key must be a cosignature key (`audit-guard keys --witness-key`)");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut latest = HashMap::new();
        for (origin, vkey) in &logs {
            let path = state_file(dir, origin);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            let (cp, _) =
                Checkpoint::open(&bytes, vkey, origin).with_context(|| format!("{}: the stored checkpoint of {origin}", path.display()))?;
            latest.insert(origin.clone(), cp);
        }
        Ok(Self {
            key,
            logs,
            dir: dir.to_path_buf(),
            latest: Mutex::new(latest),
        })
    }

    /// The latest cosigned checkpoint of `origin`, if any.
    pub async fn latest(&self, origin: &str) -> Option<Checkpoint> {
        self.latest.lock().await.get(origin).cloned()
    }

    /// Handles one request body: the cosignature lines, or why not.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let req = AddCheckpoint::parse(body).map_err(Refusal::Malformed)?;
        let mut latest = self.latest.lock().await;
        let checked = witness::check(&self.logs, |o| latest.get(o).cloned(), &req);
        let (cp, note) = match checked {
            Ok(ok) => ok,
            Err(r) => {
                self.keep_evidence(&r, &req);
                return Err(r);
            }
        };
        let path = state_file(&self.dir, &cp.origin);
        write_atomically(&path, &note.to_bytes()).map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "storing the checkpoint failed; not cosigning");
            Refusal::Internal("the witness could not store the checkpoint".into())
        })?;
        tracing::info!(origin = %cp.origin, size = cp.size, "cosigned");
        latest.insert(cp.origin.clone(), cp);
        drop(latest);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        witness::cosignature_lines(&note, &self.key, now).map_err(|e| Refusal::Internal(e.to_string()))
    }

    /// A signed checkpoint that forks the history or fails its proof is evidence against the
    /// log: kept under `refused/` for the auditor.
    fn keep_evidence(&self, r: &Refusal, req: &AddCheckpoint) {
        let fork = matches!(r, Refusal::Conflict { reason, .. } if reason.contains("fork"));
        if !fork && !matches!(r, Refusal::BadProof { .. }) {
            tracing::info!(refusal = %r, "refused");
            return;
        }
        let dir = self.dir.join("refused");
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
        let path = dir.join(format!("{ts}.req"));
        let kept = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, req.to_bytes()));
        match kept {
            Ok(()) => tracing::warn!(refusal = %r, kept = %path.display(), "refused a checkpoint that contradicts the log's history"),
            Err(e) => tracing::warn!(refusal = %r, error = %e, "refused a checkpoint that contradicts the log's history (not kept)"),
        }
    }
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    match w.add_checkpoint(&body).await {
        Ok(lines) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], lines).into_response(),
        Err(r) => {
            let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
            match r {
                Refusal::Conflict { known, .. } => {
                    (status, [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)], format!("{known}\n")).into_response()
                }
                other => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{other}\n")).into_response(),
            }
        }
    }
}

pub fn router(w: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(w)
}

fn read_key_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// The logs named by `--log-public-key`: origin → verifier key.
pub fn load_logs(args: &[LogPublicKeyArg]) -> anyhow::Result<Logs> {
    let mut logs = Logs::new();
    for a in args {
        let key = VerifierKey::parse(&read_key_file(&a.file)?).with_context(|| format!("{}", a.file.display()))?;
        if key.alg != ALG_ED25519 {
            bail!("{}: a log's key signs with Ed25519 (0x01)", a.file.display());
        }
        let origin = a.origin.clone().unwrap_or_else(|| key.name.clone());
        if logs.insert(origin.clone(), key).is_some() {
            bail!("log {origin:?} is given twice");
        }
    }
    Ok(logs)
}

pub async fn run(args: LogWitnessArgs) -> anyhow::Result<bool> {
    let key = SignerKey::parse(&read_key_file(&args.key_file)?).with_context(|| format!("{}", args.key_file.display()))?;
    let logs = load_logs(&args.log_public_keys)?;
    let w = Arc::new(Witness::load(key, logs, &args.state_dir)?);
    let shutdown = CancellationToken::new();
    let tls = match (&args.tls_cert_dir, args.plain_http) {
        (Some(dir), false) => {
            let resolver = crate::certs::ReloadingResolver::load(dir).context("loading the witness's serving certificate")?;
            resolver.spawn_reloader(shutdown.clone());
            Some(Arc::new(crate::certs::server_config(resolver)?))
        }
        (None, true) => None,
        _ => bail!("pass --tls-cert-dir <dir holding tls.crt and tls.key>, or --plain-http"),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        witness = %w.key.verifier(),
        logs = ?w.logs.keys().collect::<Vec<_>>(),
        "log witness listening; POST /add-checkpoint"
    );
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    let limits = crate::https::ListenerLimits {
        name: "log-witness",
        ..Default::default()
    };
    crate::https::serve_with(listener, tls, router(w), shutdown, Duration::from_secs(10), &limits)
        .await
        .context("serving")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::{consistency_proof, leaf_hash, MemoryTree};
    use ed25519_dalek::SigningKey;

    const ORIGIN: &str = "example.com/log";

    fn log_key() -> SignerKey {
        SignerKey::new(ORIGIN, ALG_ED25519, SigningKey::from_bytes(&[1; 32])).unwrap()
    }

    fn witness(dir: &Path) -> Witness {
        let key = SignerKey::new("w.example", ALG_COSIGNATURE_V1, SigningKey::from_bytes(&[2; 32])).unwrap();
        let logs = Logs::from([(ORIGIN.to_string(), log_key().verifier().clone())]);
        Witness::load(key, logs, dir).unwrap()
    }

    fn body(t: &MemoryTree, old: u64) -> Vec<u8> {
        let note = Checkpoint {
            origin: ORIGIN.into(),
            size: t.size(),
            root: t.root(),
            extensions: vec![],
        }
        .sign(&log_key())
        .unwrap();
        AddCheckpoint {
            old,
            proof: if old == 0 {
                vec![]
            } else {
                consistency_proof(t, old, t.size()).unwrap()
            },
            checkpoint: note.to_bytes(),
        }
        .to_bytes()
    }

    #[tokio::test]
    async fn state_survives_a_restart_and_forks_are_kept_as_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = MemoryTree::new();
        for i in 0..7u8 {
            t.append(leaf_hash(&[i]));
        }
        let w = witness(dir.path());
        w.add_checkpoint(&body(&t, 0)).await.unwrap();
        drop(w);
        let w = witness(dir.path());
        assert_eq!(w.latest(ORIGIN).await.unwrap().size, 7);
        let mut fork = MemoryTree::new();
        for i in 0..7u8 {
            fork.append(leaf_hash(&[i, 1]));
        }
        let err = w.add_checkpoint(&body(&fork, 7)).await.unwrap_err();
        assert_eq!(err.status(), 409);
        assert_eq!(std::fs::read_dir(dir.path().join("refused")).unwrap().count(), 1);
        t.append(leaf_hash(&[9]));
        w.add_checkpoint(&body(&t, 7)).await.unwrap();
        assert_eq!(witness(dir.path()).latest(ORIGIN).await.unwrap().size, 8);
        // A state file that is not a valid checkpoint stops the start.
        std::fs::write(state_file(dir.path(), ORIGIN), b"junk").unwrap();
        let key = SignerKey::new("w.example", ALG_COSIGNATURE_V1, SigningKey::from_bytes(&[2; 32])).unwrap();
        let logs = Logs::from([(ORIGIN.to_string(), log_key().verifier().clone())]);
        assert!(Witness::load(key, logs, dir.path()).is_err());
    }
}
