//! The transparency log's read API, for verifiers (readers' authorization, like every read):
//! the latest (or a past) signed checkpoint, the tlog-tiles resources, and inclusion and
//! consistency proofs. Everything served can be checked against a checkpoint with the log's
//! public key alone; nothing here changes the log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

use super::http::{db_problem, timed, AppState};
use super::problem::Problem;
use super::query::{self, Params};
use super::store::{Store, StoredCheckpoint};
use super::tlog;
use super::witnesses;
use crate::evidence::entry::Kind;
use crate::evidence::merkle::{consistency_proof, inclusion_proof, leaf_hash, root_at, HashReader, ProofError};
use crate::evidence::proof::TlogProof;
use crate::evidence::tiles::{encode_bundle, parse_path, Resource, TILE_WIDTH};

fn body(content_type: &'static str, data: impl Into<axum::body::Body>) -> Response {
    let mut resp = Response::new(data.into());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn no_checkpoint(state: &AppState) -> Problem {
    let detail = if state.log_key.is_some() {
        "no checkpoint signed yet: the log's first sequencing round has not run; retry in a second"
    } else {
        "this Data Storage signs no checkpoints: it has no --log-signing-key-file (DATASTORAGE_LOG_SIGNING_KEY_FILE); \
         the log still sequences every stored item"
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
}

/// The checkpoint's note with the witnesses' cosignature lines kept for it.
async fn cosigned(state: &AppState, cp: StoredCheckpoint) -> Result<String, Problem> {
    let lines = timed("log_cosignatures", state.store.log_cosignatures(cp.size))
        .await
        .map_err(|e| db_problem("log_cosignatures", e))?;
    Ok(witnesses::with_cosignatures(&cp.note, &lines))
}

/// `GET /api/v1/log/checkpoint[?size=N]`: the latest signed checkpoint, or the one of size N,
/// with the cosignatures witnesses gave it.
pub async fn checkpoint(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["size"])?;
    let size = number(&p, "size")?;
    let cp = timed("log_checkpoint", state.store.log_checkpoint(size))
        .await
        .map_err(|e| db_problem("log_checkpoint", e))?;
    match (cp, size) {
        (Some(cp), _) => Ok(body("text/plain; charset=utf-8", cosigned(&state, cp).await?)),
        (None, Some(n)) => Err(Problem::new(StatusCode::NOT_FOUND, format!("no checkpoint of size {n} was signed"))),
        (None, None) => {
            let mut resp = no_checkpoint(&state).into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(resp)
        }
    }
}

/// `GET /api/v1/log/tile/<L>/<N>[.p/<W>]` and `/api/v1/log/tile/entries/<N>[.p/<W>]`.
pub async fn tile(State(state): State<Arc<AppState>>, Path(rest): Path<String>, uri: Uri) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let path = format!("tile/{rest}");
    let resource = parse_path(&path).map_err(|e| Problem::bad_request(e.to_string()))?;
    let missing = || Problem::new(StatusCode::NOT_FOUND, format!("{path}: the log is not that large yet"));
    if !within_any_log(resource) {
        return Err(missing());
    }
    let data = match resource {
        Resource::Tile(t) => {
            let mut got = timed("log_tiles", state.store.log_tiles(vec![t]))
                .await
                .map_err(|e| db_problem("log_tiles", e))?;
            got.remove(&t).ok_or_else(missing)?
        }
        Resource::Entries(b) => {
            let width = u64::from(b.width);
            let entries = timed("log_entries", state.store.log_entries(b.first(), width))
                .await
                .map_err(|e| db_problem("log_entries", e))?;
            if entries.len() as u64 != width {
                return Err(missing());
            }
            encode_bundle(&entries).map_err(|e| db_problem("log_entries", e))?
        }
    };
    Ok(body("application/octet-stream", data))
}

/// Whether a resource could exist in a log of at most `i64::MAX` entries (what the databases
/// index); beyond, its position would overflow the arithmetic that locates it.
pub fn within_any_log(r: Resource) -> bool {
    let (level, index) = match r {
        Resource::Tile(t) => (t.level, t.index),
        Resource::Entries(b) => (0, b.index),
    };
    level < 8 && index <= i64::MAX as u64 / TILE_WIDTH
}

fn number(p: &Params, key: &str) -> Result<Option<u64>, Problem> {
    p.get(key)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|_| !v.starts_with('+'))
                .ok_or_else(|| Problem::field(key, format!("{key}: expected a non-negative integer, got {v:?}")))
        })
        .transpose()
}

/// The kind named in a query (`record`, `amendment`, `break-glass`).
pub fn kind_param(v: &str) -> Result<Kind, Problem> {
    match v {
        "record" => Ok(Kind::Record),
        "amendment" => Ok(Kind::Amendment),
        "break-glass" => Ok(Kind::BreakGlass),
        _ => Err(Problem::field(
            "kind",
            format!("kind: expected record, amendment or break-glass, got {v:?}"),
        )),
    }
}

/// What an inclusion proof is asked for: a log index, or an item by kind and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Index(u64),
    Item(Kind, String),
}

pub fn inclusion_subject(p: &Params) -> Result<Subject, Problem> {
    match (number(p, "index")?, p.get("kind"), p.get("id")) {
        (Some(i), None, None) => Ok(Subject::Index(i)),
        (None, Some(k), Some(id)) if !id.is_empty() => Ok(Subject::Item(kind_param(k)?, id.to_string())),
        _ => Err(Problem::bad_request(
            "give either index=<log index>, or kind=<record|amendment|break-glass> and id=<the item's id>",
        )),
    }
}

/// The sizes a proof may be asked for: up to what the log holds.
pub fn check_size(key: &str, size: u64, held: u64) -> Result<(), Problem> {
    if size > held {
        return Err(Problem::field(key, format!("{key}: the log holds {held} entries, not {size}")));
    }
    Ok(())
}

/// The size a proof is for: the one asked, else the latest checkpoint's, else the whole log.
async fn proof_size(state: &AppState, asked: Option<u64>, key: &str) -> Result<(u64, u64), Problem> {
    let held = timed("log_size", state.store.log_size())
        .await
        .map_err(|e| db_problem("log_size", e))?;
    let size = match asked {
        Some(s) => s,
        None => timed("log_checkpoint", state.store.log_checkpoint(None))
            .await
            .map_err(|e| db_problem("log_checkpoint", e))?
            .map_or(held, |cp| cp.size),
    };
    check_size(key, size, held)?;
    Ok((size, held))
}

/// `f` over the stored tiles of the tree of `size` (reads only the tiles it needs).
async fn over_tiles<T>(store: &dyn Store, size: u64, f: impl Fn(&dyn HashReader) -> Result<T, ProofError>) -> Result<T, Problem> {
    timed("log_proof", tlog::over_tiles(store, size, f))
        .await
        .map_err(|e| db_problem("log_proof", e))
}

fn b64(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// How an inclusion proof is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofFormat {
    Json,
    /// C2SP tlog-proof, with the entry as its extra data and the checkpoint of the size.
    TlogProof,
}

pub fn proof_format(p: &Params) -> Result<ProofFormat, Problem> {
    match p.get("format") {
        None | Some("json") => Ok(ProofFormat::Json),
        Some("tlog-proof") => Ok(ProofFormat::TlogProof),
        Some(other) => Err(Problem::field(
            "format",
            format!("format: expected json or tlog-proof, got {other:?}"),
        )),
    }
}

/// `GET /api/v1/log/proof/inclusion?index=I[&size=S]` or `?kind=K&id=ID[&size=S]`, `[&format=tlog-proof]`.
pub async fn inclusion(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["index", "kind", "id", "size", "format"])?;
    let subject = inclusion_subject(&p)?;
    let format = proof_format(&p)?;
    let asked = number(&p, "size")?;
    // The index first: an item sequenced meanwhile is then inside the size read after it.
    let index = match &subject {
        Subject::Index(i) => *i,
        Subject::Item(kind, id) => timed("log_index", state.store.log_index(*kind, id.clone()))
            .await
            .map_err(|e| db_problem("log_index", e))?
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    format!("{id:?} is not in the log (not stored, or stored less than a sequencing round ago)"),
                )
            })?,
    };
    let (size, _) = proof_size(&state, asked, "size").await?;
    if index >= size {
        return Err(Problem::field(
            "size",
            format!("entry {index} is not in the tree of {size} entries (ask for a larger size, or wait for the next checkpoint)"),
        ));
    }
    let entry = timed("log_entries", state.store.log_entries(index, 1))
        .await
        .map_err(|e| db_problem("log_entries", e))?
        .pop()
        .ok_or_else(|| db_problem("log_entries", format!("entry {index} below the log size is missing")))?;
    let (proof, root) = over_tiles(state.store.as_ref(), size, |r| {
        Ok((inclusion_proof(r, index, size)?, root_at(r, size)?))
    })
    .await?;
    if format == ProofFormat::TlogProof {
        let cp = timed("log_checkpoint", state.store.log_checkpoint(Some(size)))
            .await
            .map_err(|e| db_problem("log_checkpoint", e))?;
        let Some(cp) = cp else {
            return Err(if p.get("size").is_some() {
                Problem::field(
                    "size",
                    format!("size: no checkpoint of {size} entries was signed; a tlog-proof needs one"),
                )
            } else {
                no_checkpoint(&state)
            });
        };
        let proof = TlogProof {
            extra: Some(entry),
            index,
            hashes: proof,
            checkpoint: cosigned(&state, cp).await?.into_bytes(),
        };
        return Ok(body("text/plain; charset=utf-8", proof.to_bytes()));
    }
    Ok(axum::Json(json!({
        "index": index,
        "size": size,
        "root": B64.encode(root),
        "entry": B64.encode(&entry),
        "leaf": B64.encode(leaf_hash(&entry)),
        "proof": b64(&proof),
    }))
    .into_response())
}

/// `GET /api/v1/log/index/<kind>/<id>`: an item's log index once the latest checkpoint covers
/// it (404 before), and that checkpoint's size. No proof is built: this is the receipt the
/// controller writes on a CR before its release, so it is a lookup by id (the write lane's,
/// like the record's own) and costs two indexed reads.
pub async fn item_index(
    State(state): State<Arc<AppState>>,
    Path((kind, id)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, Problem> {
    query::params(&uri, &[])?;
    let kind = kind_param(&kind)?;
    let not_yet = |why: String| Problem::new(StatusCode::NOT_FOUND, why);
    let index = timed("log_index", state.store.log_index(kind, id.clone()))
        .await
        .map_err(|e| db_problem("log_index", e))?
        .ok_or_else(|| {
            not_yet(format!(
                "{id:?} is not in the log (not stored, or stored less than a sequencing round ago)"
            ))
        })?;
    let (size, _) = proof_size(&state, None, "size").await?;
    if index >= size {
        return Err(not_yet(format!(
            "entry {index} is not under the latest checkpoint ({size} entries) yet"
        )));
    }
    Ok(axum::Json(json!({ "index": index, "size": size })).into_response())
}

/// `GET /api/v1/log/proof/consistency?old=M[&new=N]`.
pub async fn consistency(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Problem> {
    let p = query::params(&uri, &["old", "new"])?;
    let old = number(&p, "old")?.ok_or_else(|| Problem::field("old", "old: the earlier tree size is required"))?;
    let (new, _) = proof_size(&state, number(&p, "new")?, "new").await?;
    if old > new {
        return Err(Problem::field("old", format!("old: {old} is larger than new {new}")));
    }
    let (proof, old_root, new_root) = over_tiles(state.store.as_ref(), new, |r| {
        Ok((consistency_proof(r, old, new)?, root_at(r, old)?, root_at(r, new)?))
    })
    .await?;
    Ok(axum::Json(json!({
        "old": old,
        "new": new,
        "old_root": B64.encode(old_root),
        "new_root": B64.encode(new_root),
        "proof": b64(&proof),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        query::params(&format!("/x?{q}").parse().unwrap(), &["index", "kind", "id", "size", "format"]).unwrap()
    }

    #[test]
    fn inclusion_is_asked_by_index_or_by_item() {
        assert_eq!(inclusion_subject(&params("index=7")).unwrap(), Subject::Index(7));
        assert_eq!(
            inclusion_subject(&params("kind=break-glass&id=bg-1")).unwrap(),
            Subject::Item(Kind::BreakGlass, "bg-1".into())
        );
        for bad in ["", "index=1&kind=record&id=a", "kind=record", "id=a", "kind=record&id="] {
            assert_eq!(inclusion_subject(&params(bad)).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(
            inclusion_subject(&params("kind=chain&id=a")).unwrap_err().field.as_deref(),
            Some("kind")
        );
        for bad in ["index=-1", "index=+1", "index=x", "index=18446744073709551616"] {
            assert_eq!(
                inclusion_subject(&params(bad)).unwrap_err().field.as_deref(),
                Some("index"),
                "{bad}"
            );
        }
    }

    #[test]
    fn proofs_come_as_json_or_tlog_proof() {
        assert_eq!(proof_format(&params("")).unwrap(), ProofFormat::Json);
        assert_eq!(proof_format(&params("format=tlog-proof")).unwrap(), ProofFormat::TlogProof);
        assert_eq!(proof_format(&params("format=xml")).unwrap_err().field.as_deref(), Some("format"));
    }

    #[test]
    fn resources_beyond_any_log_are_not_looked_for() {
        let path = |p: &str| parse_path(p).unwrap();
        assert!(within_any_log(path("tile/0/000")));
        assert!(within_any_log(path("tile/7/x036/x028/x797/x018/x963/967")));
        assert!(!within_any_log(path("tile/8/000")));
        assert!(!within_any_log(path("tile/40/000")));
        assert!(!within_any_log(path("tile/entries/x018/x446/x744/x073/x709/x551/615")));
        assert!(within_any_log(path("tile/entries/x036/x028/x797/x018/x963/967")));
    }

    #[test]
    fn sizes_beyond_the_log_are_refused() {
        assert!(check_size("size", 10, 10).is_ok());
        let e = check_size("new", 11, 10).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (400, Some("new")));
        assert!(e.detail.contains("holds 10"), "{}", e.detail);
    }
}
