//! Witnesses of the transparency log (C2SP tlog-witness): Data Storage pushes each new
//! checkpoint, with a consistency proof from the size that witness last cosigned, to every
//! witness of its policy file, and keeps the cosignatures they answer beside the checkpoint
//! (table `tlog_cosignatures`); `/api/v1/log/checkpoint` serves them after the log's signature.
//!
//! Pushing runs on its own task: a witness that is down or refuses never blocks storing
//! records or signing checkpoints; the metrics and the alert on an uncosigned checkpoint say so.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::metrics;
use super::store::{DbError, DbResult, Store, StoredCheckpoint};
use super::tlog;
use crate::evidence::merkle::consistency_proof;
use crate::evidence::note::{Note, VerifierKey, ALG_COSIGNATURE_V1};
use crate::evidence::witness::{accept_cosignature, parse_conflict_size, AddCheckpoint};

/// One witness of the policy: its cosignature key (whose name is the witness's name) and the
/// URL prefix `add-checkpoint` is posted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWitness {
    pub key: VerifierKey,
    pub url: String,
}

/// Parses a witness policy file: `witness <verifier key> <URL>` lines; blank lines and lines
/// starting with `#` are ignored.
pub fn parse_policy(text: &str) -> Result<Vec<PolicyWitness>, String> {
    let mut out: Vec<PolicyWitness> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |r: String| format!("line {}: {r}", n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ["witness", key, url] = fields.as_slice() else {
            return Err(at(format!("expected `witness <verifier key> <URL>`, got {line:?}")));
        };
        let key = VerifierKey::parse(key).map_err(|e| at(e.to_string()))?;
        if key.alg != ALG_COSIGNATURE_V1 {
            return Err(at(format!("{}: a witness key is a cosignature key (0x04)", key.name)));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| at(format!("URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(at(format!("URL {url:?}: http or https")));
        }
        if out.iter().any(|w| w.key.name == key.name) {
            return Err(at(format!("witness {} is named twice", key.name)));
        }
        out.push(PolicyWitness {
            key,
            url: url.trim_end_matches('/').to_string(),
        });
    }
    Ok(out)
}

/// The store's side: cosignature rows (SQL shared by both backends).
macro_rules! shared_cosignatures {
    () => {
        fn log_add_cosignature<'a>(&'a self, size: u64, witness: &'a str, key_id: u32, line: &'a str) -> BoxFuture<'a, DbResult<()>> {
            async move {
                sqlx::query(
                    "INSERT INTO tlog_cosignatures (size, witness, key_id, line) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (size, witness, key_id) DO NOTHING",
                )
                .bind(tlog::db_i64(size)?)
                .bind(witness)
                .bind(i64::from(key_id))
                .bind(line)
                .execute(&self.write)
                .await?;
                Ok(())
            }
            .boxed()
        }

        fn log_cosignatures(&self, size: u64) -> BoxFuture<'_, DbResult<Vec<String>>> {
            async move {
                Ok(
                    sqlx::query_scalar("SELECT line FROM tlog_cosignatures WHERE size = $1 ORDER BY witness, key_id")
                        .bind(tlog::db_i64(size)?)
                        .fetch_all(&self.read)
                        .await?,
                )
            }
            .boxed()
        }

        fn log_cosigned_size<'a>(&'a self, witness: &'a str, key_id: u32) -> BoxFuture<'a, DbResult<Option<u64>>> {
            async move {
                let n: Option<i64> = sqlx::query_scalar("SELECT max(size) FROM tlog_cosignatures WHERE witness = $1 AND key_id = $2")
                    .bind(witness)
                    .bind(i64::from(key_id))
                    .fetch_one(&self.read)
                    .await?;
                n.map(tlog::db_u64).transpose()
            }
            .boxed()
        }
    };
}
pub(crate) use shared_cosignatures;

/// The served checkpoint: the log's note with the cosignature lines kept for its size.
pub fn with_cosignatures(note: &str, lines: &[String]) -> String {
    let mut out = note.to_string();
    for l in lines {
        if !out.contains(l.as_str()) {
            out.push_str(l);
            if !l.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// What one push did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pushed {
    Cosigned,
    /// The witness knows this size instead.
    Conflict(u64),
    Refused(String),
}

/// One witness's pusher: what it knows of the witness between pushes.
struct Target {
    w: PolicyWitness,
    /// The size the witness last cosigned (as far as we know); None: ask the database.
    known: Option<u64>,
}

/// A consistency proof between two sizes from the stored tiles.
async fn proof(store: &dyn Store, old: u64, new: u64) -> DbResult<Vec<[u8; 32]>> {
    if old == 0 || old == new {
        return Ok(vec![]);
    }
    let f = |r: &dyn crate::evidence::merkle::HashReader| consistency_proof(r, old, new);
    let tiles = store.log_tiles(tlog::tiles_read_by(new, f)).await?;
    tlog::run_on_tiles(new, &tiles, f).map_err(|e| DbError::Value(format!("the stored log hashes are inconsistent: {e}")))
}

async fn push_one(http: &reqwest::Client, store: &dyn Store, t: &Target, cp: &StoredCheckpoint, old: u64) -> DbResult<Pushed> {
    let body = AddCheckpoint {
        old,
        proof: proof(store, old, cp.size).await?,
        checkpoint: cp.note.clone().into_bytes(),
    };
    let resp = http.post(format!("{}/add-checkpoint", t.w.url)).body(body.to_bytes()).send().await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Ok(Pushed::Refused(format!("unreachable: {e}"))),
    };
    let status = resp.status().as_u16();
    let answer = resp.bytes().await.unwrap_or_default();
    match status {
        200 => {
            let mut note = Note::parse(cp.note.as_bytes()).map_err(|e| DbError::Value(e.to_string()))?;
            let before = note.signatures.len();
            if let Err(e) = accept_cosignature(&mut note, &answer, &t.w.key) {
                return Ok(Pushed::Refused(format!("answered 200 without a valid cosignature: {e}")));
            }
            let bytes = String::from_utf8(note.to_bytes()).map_err(|e| DbError::Value(e.to_string()))?;
            // The lines added, in the form they are served.
            let lines: Vec<&str> = bytes.lines().rev().take(note.signatures.len() - before).collect();
            for line in lines {
                store
                    .log_add_cosignature(cp.size, &t.w.key.name, t.w.key.key_id, &format!("{line}\n"))
                    .await?;
            }
            Ok(Pushed::Cosigned)
        }
        409 => match parse_conflict_size(&answer) {
            Some(size) => Ok(Pushed::Conflict(size)),
            None => Ok(Pushed::Refused("409 without a size".into())),
        },
        s => Ok(Pushed::Refused(format!(
            "answered {s}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim_end()
        ))),
    }
}

/// Pushes the latest checkpoint to `t` unless it already cosigned it; a 409 is retried once
/// from the size the witness names.
async fn push(http: &reqwest::Client, store: &dyn Store, t: &mut Target, cp: &StoredCheckpoint) -> DbResult<bool> {
    let name = t.w.key.name.clone();
    let known = match t.known {
        Some(k) => k,
        None => store.log_cosigned_size(&name, t.w.key.key_id).await?.unwrap_or(0),
    };
    if known == cp.size
        && store
            .log_cosignatures(cp.size)
            .await?
            .iter()
            .any(|l| l.contains(&format!(" {name} ")))
    {
        t.known = Some(known);
        return Ok(true);
    }
    let mut old = known;
    for _ in 0..2 {
        if old > cp.size {
            tracing::error!(witness = %name, witness_size = old, log_size = cp.size, "the witness cosigned a larger tree than this log holds");
            metrics::WITNESS_PUSHES.with_label_values(&["refused"]).inc();
            t.known = None;
            return Ok(false);
        }
        match push_one(http, store, t, cp, old).await? {
            Pushed::Cosigned => {
                metrics::WITNESS_PUSHES.with_label_values(&["ok"]).inc();
                tracing::debug!(witness = %name, size = cp.size, "checkpoint cosigned");
                t.known = Some(cp.size);
                return Ok(true);
            }
            Pushed::Conflict(size) => {
                metrics::WITNESS_PUSHES.with_label_values(&["conflict"]).inc();
                tracing::info!(witness = %name, from = old, witness_size = size, "the witness knows another size; pushing from it");
                old = size;
                t.known = Some(size);
            }
            Pushed::Refused(why) => {
                let result = if why.starts_with("unreachable") { "error" } else { "refused" };
                metrics::WITNESS_PUSHES.with_label_values(&[result]).inc();
                tracing::warn!(witness = %name, size = cp.size, reason = %why, "witness did not cosign");
                t.known = None;
                return Ok(false);
            }
        }
    }
    Ok(false)
}

/// Pushes each new checkpoint to every witness, every `every`, until `shutdown`.
pub fn spawn_pusher(store: Arc<dyn Store>, witnesses: Vec<PolicyWitness>, every: Duration, shutdown: CancellationToken) {
    if witnesses.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the witnesses; checkpoints are not pushed");
            return;
        }
    };
    let mut targets: Vec<Target> = witnesses.into_iter().map(|w| Target { w, known: None }).collect();
    tokio::spawn(async move {
        loop {
            if let Err(e) = push_round(&http, &*store, &mut targets).await {
                tracing::warn!(error = %e, "pushing checkpoints to witnesses failed; retried next round");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}

async fn push_round(http: &reqwest::Client, store: &dyn Store, targets: &mut [Target]) -> DbResult<()> {
    let Some(cp) = store.log_checkpoint(None).await? else {
        return Ok(());
    };
    let signed_at = store.log_lag().await?.newest_checkpoint;
    let mut all = true;
    for t in targets.iter_mut() {
        all &= push(http, store, t, &cp).await?;
    }
    let waited = match (all, signed_at) {
        (true, _) | (false, None) => 0,
        (false, Some(at)) => (Utc::now() - at).num_seconds().max(0),
    };
    metrics::WITNESS_UNCOSIGNED_SECONDS.set(waited);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::note::{SignerKey, ALG_ED25519};

    #[test]
    fn policies_name_witnesses_by_their_keys() {
        let w = SignerKey::generate("w1.example", ALG_COSIGNATURE_V1).unwrap();
        let text = format!("# ours\n\nwitness {} http://127.0.0.1:7380/\n", w.verifier());
        let p = parse_policy(&text).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].url, "http://127.0.0.1:7380");
        assert_eq!(p[0].key.name, "w1.example");
        let twice = format!("{text}{text}");
        assert!(parse_policy(&twice).unwrap_err().contains("twice"));
        let log = SignerKey::generate("log.example", ALG_ED25519).unwrap();
        assert!(parse_policy(&format!("witness {} http://x", log.verifier()))
            .unwrap_err()
            .contains("cosignature key"));
        assert!(parse_policy(&format!("witness {} ftp://x", w.verifier())).is_err());
        assert!(parse_policy("witness x").unwrap_err().contains("line 1"));
    }

    #[test]
    fn served_checkpoints_carry_each_cosignature_once() {
        let note = "o\n1\nAA==\n\n— o abc\n";
        let lines = vec!["— w1 def\n".to_string(), "— w1 def\n".to_string(), "— w2 ghi".to_string()];
        assert_eq!(with_cosignatures(note, &lines), "o\n1\nAA==\n\n— o abc\n— w1 def\n— w2 ghi\n");
    }
}
