//! Shared by the witness tests (ours and torchwood's litewitness): a raw `add-checkpoint`
//! request, checkpoints signed with the log's key, records stored in a Data Storage, and the
//! served checkpoint once a witness cosigned it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audit_guard::evidence::merkle::Hash;
use audit_guard::evidence::note::{Checkpoint, Note, SignerKey, VerifierKey};
use audit_guard::evidence::witness::AddCheckpoint;
use serde_json::json;

use super::datastorage::{ago, binary, record, DataStorage, BASE, READER_TOKEN};
use super::wait_for;

/// Waits until the witness `child` listens on `port`; panics with its log (`log`) when it
/// exits or does not get there in a minute.
pub async fn wait_listening(what: &str, child: &mut Child, port: u16, log: &Path) {
    let ready = wait_for(&format!("{what} to listen"), Duration::from_secs(60), || {
        let exited = child.try_wait().ok().flatten();
        async move {
            if let Some(status) = exited {
                anyhow::bail!("{what} exited ({status})");
            }
            Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
        }
    })
    .await;
    if let Err(e) = ready {
        panic!("{e}\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
}

/// Posts `add-checkpoint` to the witness at `url`: (status, Content-Type, body).
pub async fn add_checkpoint(url: &str, old: u64, proof: Vec<Hash>, checkpoint: &[u8]) -> (u16, String, Vec<u8>) {
    let body = AddCheckpoint {
        old,
        proof,
        checkpoint: checkpoint.to_vec(),
    };
    let r = reqwest::Client::new()
        .post(format!("{url}/add-checkpoint"))
        .body(body.to_bytes())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// A checkpoint of the log `log` names (its key name is the origin), signed with it.
pub fn signed_checkpoint(log: &SignerKey, size: u64, root: Hash) -> Vec<u8> {
    Checkpoint {
        origin: log.verifier().name.clone(),
        size,
        root,
        extensions: vec![],
    }
    .sign(log)
    .unwrap()
    .to_bytes()
}

/// Stores `n` records `<tag>-<i>`, each answered 201.
pub async fn store_records(svc: &DataStorage, tag: &str, n: usize) {
    for i in 0..n {
        let (s, _, v) = svc
            .post_json(
                BASE,
                &record(&format!("{tag}-{i}"), "fp", "production", "P1", &ago(60), json!("1s")),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
}

/// The served checkpoint once it covers `size` entries and carries `witness`'s valid
/// cosignature (the log's signature checked too); with the cosignature's time.
pub async fn cosigned_checkpoint(svc: &DataStorage, log: &VerifierKey, witness: &VerifierKey, size: u64) -> (Checkpoint, Note, u64) {
    wait_for("a cosigned checkpoint", Duration::from_secs(60), || async {
        let r = svc
            .http
            .get(svc.endpoint("/api/v1/log/checkpoint"))
            .bearer_auth(READER_TOKEN)
            .send()
            .await?;
        if r.status() != 200 {
            return Ok(None);
        }
        let (cp, note) = Checkpoint::open(&r.bytes().await?, log, &log.name)?;
        if cp.size < size {
            return Ok(None);
        }
        Ok(note.verify_cosignature(witness).ok().map(|ts| (cp, note, ts)))
    })
    .await
    .unwrap()
}

/// Data Storage counted at least one push a witness cosigned.
pub async fn assert_pushes_cosigned(svc: &DataStorage) {
    let metrics = svc.http.get(svc.endpoint("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("datastorage_log_witness_pushes_total{result=\"ok\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// `audit-guard log-witness` on plain HTTP at `port`, killed on drop.
pub struct Witness {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Witness {
    /// Started with the witness's signer key file and the log's verifier key file, its state in
    /// `state` and its stderr appended to `log`.
    pub async fn start(witness_key: &Path, log_pub: &Path, state: &Path, port: u16, log: &Path) -> Witness {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(binary())
            .args(["log-witness", "--plain-http", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--key-file")
            .arg(witness_key)
            .arg("--log-public-key")
            .arg(log_pub)
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let mut w = Witness {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        };
        wait_listening("log-witness", &mut w.child, port, &w.log).await;
        w
    }

    pub async fn add(&self, old: u64, proof: Vec<Hash>, checkpoint: &[u8]) -> (u16, String, Vec<u8>) {
        add_checkpoint(&self.url, old, proof, checkpoint).await
    }
}
