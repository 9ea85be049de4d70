//! `audit-guard log-witness`, the auditor's witness, as a real process on plain HTTP.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audit_guard::evidence::merkle::Hash;
use audit_guard::evidence::witness::AddCheckpoint;

use super::datastorage::binary;
use super::wait_for;

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
    /// Started with the witness's signer key file and the log's verifier key file.
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
        let ready = wait_for("the witness to listen", Duration::from_secs(60), || {
            let exited = w.child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    anyhow::bail!("log-witness exited ({status})");
                }
                Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
            }
        })
        .await;
        if let Err(e) = ready {
            panic!("{e}\n{}", std::fs::read_to_string(&w.log).unwrap_or_default());
        }
        w
    }

    pub async fn add(&self, old: u64, proof: Vec<Hash>, checkpoint: &[u8]) -> (u16, String, Vec<u8>) {
        let body = AddCheckpoint {
            old,
            proof,
            checkpoint: checkpoint.to_vec(),
        };
        let r = reqwest::Client::new()
            .post(format!("{}/add-checkpoint", self.url))
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
}
