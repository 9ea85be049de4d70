//! The auditor's commands. Each returns whether its check passed (`Ok(false)`: exit 1) or an
//! error when it could not check at all (exit 2).
//!
//! `verify` runs either way, on purpose: through Data Storage's API with a reader's token (no
//! database access needed, but the answer is the service's), or straight from the database
//! with a read-only role and a copy of the chain key — then the auditor's own binary does the
//! recomputation and a compromised service cannot answer for it.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::exportfile::{check_export, LogTrust};
use super::logcheck;
use super::report::{self, PeriodReport};
use super::witness::{self, Live, LiveObject, LogStats, RecordRef};
use crate::api_paths::{BASE, EXPORT_ID_HEADER, LOG};
use crate::config::{
    ApiArgs, AuditorCommand, DbArgs, ExportArgs, ExportFormat, KeysArgs, ReportArgs, ReportFormat, VerifyArgs, VerifyExportArgs,
    VerifyLogArgs, WitnessArgs,
};
use crate::datastorage::store::{Store, TimeRange};
use crate::datastorage::verify::{self, VerifyOptions};
use crate::datastorage::{postgres, sqlite};
use crate::evidence::chain::{self, ChainKeys, Head};
use crate::evidence::manifest::{Manifest, SignedManifest};
use crate::evidence::note::{Checkpoint, Note, SignerKey, VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use crate::evidence::signing;
use crate::evidence::tiles::{bundles_for_size, decode_bundle, tiles_for_size};
use crate::evidence::verify::{Verdict, VerifyReport};

pub async fn run(cmd: AuditorCommand) -> anyhow::Result<bool> {
    match cmd {
        AuditorCommand::Verify(a) => verify_cmd(*a).await,
        AuditorCommand::Export(a) => export_cmd(*a).await,
        AuditorCommand::VerifyExport(a) => verify_export_cmd(&a),
        AuditorCommand::Report(a) => report_cmd(*a).await,
        AuditorCommand::Witness(a) => witness_cmd(*a).await,
        AuditorCommand::Keys(a) => keys_cmd(&a),
        AuditorCommand::VerifyLog(a) => verify_log_cmd(*a).await,
        AuditorCommand::LogWitness(a) => super::logwitness::run(*a).await,
    }
}

/// Data Storage's API with a reader's token.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let url = args.url.clone().context("--url (Data Storage's base URL) is required")?;
        let token = args
            .token_file
            .as_ref()
            .map(|f| {
                std::fs::read_to_string(f)
                    .map(|t| t.trim().to_string())
                    .with_context(|| format!("reading {}", f.display()))
            })
            .transpose()?;
        let mut http = crate::client::http_builder(args.ca_file.as_deref())?
            .timeout(args.timeout)
            .connect_timeout(Duration::from_secs(10));
        let mut base = url.trim_end_matches('/').to_string();
        if let Some(name) = &args.tls_server_name {
            let (named, addrs) = connect_as(&base, name)?;
            http = http.resolve_to_addrs(name, &addrs);
            base = named;
        }
        Ok(Self {
            http: http.build()?,
            base,
            token,
        })
    }

    /// GET `path` with the `query` pairs that have a value (reqwest encodes them); any answer
    /// but 2xx is an error naming Data Storage's detail.
    pub async fn get(&self, path: &str, query: &[(&str, Option<String>)]) -> anyhow::Result<reqwest::Response> {
        Self::successful(path, self.send_get(path, query).await?).await
    }

    /// As [`Api::get_json`], with None where Data Storage answers 404.
    pub async fn get_json_if_found<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> anyhow::Result<Option<T>> {
        let resp = self.send_get(path, query).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = Self::successful(path, resp).await?;
        Ok(Some(
            resp.json().await.with_context(|| format!("reading the answer of GET {path}"))?,
        ))
    }

    async fn send_get(&self, path: &str, query: &[(&str, Option<String>)]) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.get(format!("{}{path}", self.base)).query(&present(query));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req.send().await.with_context(|| format!("GET {path}"))
    }

    async fn successful(path: &str, resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(String::from))
                .unwrap_or(body);
            bail!("GET {path}: {status}: {detail}");
        }
        Ok(resp)
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, query: &[(&str, Option<String>)]) -> anyhow::Result<T> {
        let resp = self.get(path, query).await?;
        resp.json().await.with_context(|| format!("reading the answer of GET {path}"))
    }
}

/// The pairs that have a value (absent ones are left out of the query).
pub fn present<'a>(pairs: &[(&'a str, Option<String>)]) -> Vec<(&'a str, String)> {
    pairs.iter().filter_map(|(k, v)| v.clone().map(|v| (*k, v))).collect()
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Heads from a file: an earlier `verify --output`, an export manifest, or a signed manifest.
pub fn anchors_from(text: &str) -> Result<Vec<Head>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let inner: Value = match v.get("manifest").and_then(|m| m.as_str()) {
        Some(m) => serde_json::from_str(m).map_err(|e| format!("the signed manifest is not JSON: {e}"))?,
        None => v,
    };
    let heads = inner
        .get("heads")
        .or_else(|| inner.get("chain_heads"))
        .ok_or("no heads (expected a verify result or an export manifest)")?;
    serde_json::from_value(heads.clone()).map_err(|e| format!("the heads are not heads: {e}"))
}

/// The API's form of anchors: `shard:seq:hash,...`.
pub fn anchors_param(anchors: &[Head]) -> Option<String> {
    (!anchors.is_empty()).then(|| {
        anchors
            .iter()
            .map(|h| format!("{}:{}:{}", h.shard, h.seq, chain::hex(&h.hash)))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn write_out(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        std::io::stdout().write_all(bytes)?;
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn print_verify(report: &VerifyReport) {
    println!("{}", report.summary());
    for f in report.findings.iter().take(20) {
        println!(
            "  {:?} {} {}{} — {}",
            f.problem,
            f.kind.map_or("", |k| k.as_str()),
            f.id.as_deref().unwrap_or(""),
            match (f.shard, f.seq) {
                (Some(s), Some(q)) => format!(" (shard {s} seq {q})"),
                _ => String::new(),
            },
            f.detail
        );
    }
    println!("heads: {}", serde_json::to_string(&report.heads).unwrap_or_default());
}

async fn open_db(db: &DbArgs) -> anyhow::Result<Box<dyn Store>> {
    if let Some(file) = &db.sqlite {
        return Ok(Box::new(sqlite::SqliteStore::open_read_only(file).await?));
    }
    let url = crate::datastorage::database_url(db.database_url.as_deref(), db.database_url_file.as_deref())?
        .context("give --url (the API), or --database-url / --database-url-file / --sqlite (the database)")?;
    Ok(Box::new(
        postgres::PgStore::connect_read_only(&url, Duration::from_secs(120)).await?,
    ))
}

async fn verify_cmd(a: VerifyArgs) -> anyhow::Result<bool> {
    let mut anchors = vec![];
    for f in &a.anchors {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        anchors.extend(anchors_from(&text).map_err(|e| anyhow::anyhow!("anchor file {}: {e}", f.display()))?);
    }
    let direct = a.db.database_url.is_some() || a.db.database_url_file.is_some() || a.db.sqlite.is_some();
    let report: VerifyReport = if direct {
        let key_file =
            a.db.chain_key_file
                .as_ref()
                .context("reading the database directly needs --chain-key-file")?;
        let keys = ChainKeys::load(key_file)?;
        let store = open_db(&a.db).await?;
        let opts = VerifyOptions {
            range: TimeRange {
                since: a.since,
                until: a.until,
            },
            retention_months: a.retention_months,
            anchors,
        };
        verify::verify(store.as_ref(), &keys, &opts, Utc::now()).await?
    } else {
        let api = Api::new(&a.api)?;
        let q = [
            ("since", rfc3339(a.since)),
            ("until", rfc3339(a.until)),
            ("retention_months", Some(a.retention_months.to_string())),
            ("anchors", anchors_param(&anchors)),
        ];
        api.get_json(&format!("{}/verify", BASE), &q).await?
    };
    print_verify(&report);
    if let Some(out) = &a.output {
        write_out(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(report.result == Verdict::Intact)
}

/// A signed checkpoint, its signature by `key` checked.
fn open_checkpoint(bytes: &[u8], key: &VerifierKey, what: &str) -> anyhow::Result<Checkpoint> {
    let (cp, _) = Checkpoint::open(bytes, key, &key.name).with_context(|| format!("{what}: not a checkpoint signed by {key}"))?;
    Ok(cp)
}

async fn verify_log_cmd(a: VerifyLogArgs) -> anyhow::Result<bool> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let key = read_verifier_key(&a.log_key)?;
    let saved = a
        .checkpoint
        .as_ref()
        .map(|p| open_checkpoint(&read(p)?, &key, &p.display().to_string()))
        .transpose()?;
    let api = Api::new(&a.api)?;
    let log = LOG;
    let note = api.get(&format!("{log}/checkpoint"), &[]).await?.bytes().await?;
    let latest = open_checkpoint(&note, &key, "the served checkpoint")?;
    let mut problems = vec![];
    // Between equal sizes the proof is empty; a proof not served is a problem (and the
    // judgement then finds the saved checkpoint unextended), not a reason to stop.
    let proof = match &saved {
        Some(old) if old.size < latest.size => {
            let got = api
                .get_json::<Value>(
                    &format!("{log}/proof/consistency"),
                    &[("old", Some(old.size.to_string())), ("new", Some(latest.size.to_string()))],
                )
                .await
                .and_then(|v| hashes_of(&v["proof"]));
            got.unwrap_or_else(|e| {
                problems.push(format!("the consistency proof from the saved checkpoint is not served: {e:#}"));
                vec![]
            })
        }
        _ => vec![],
    };
    let entries = served_entries(&api, latest.size, &mut problems).await;
    let leaves = stored_leaves(&api, latest.size, &mut problems).await;
    let served = match &a.export {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        None => {
            api.get(&format!("{}/export", BASE), &[("format", Some("ndjson".into()))])
                .await?
                .text()
                .await?
        }
    };
    let mut items = Vec::new();
    for (n, line) in served.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        items.push(logcheck::expected_entry(line).map_err(|e| anyhow::anyhow!("the export's line {}: {e}", n + 1))?);
    }
    let mut findings = logcheck::judge(
        &latest,
        &logcheck::contiguous(&entries),
        saved.as_ref().map(|s| (s, proof.as_slice())),
    );
    findings.problems.extend(problems);
    logcheck::compare_leaves(&entries, &leaves, &latest, &mut findings);
    let retained_from = retention_start(Utc::now(), a.retention_months);
    let cov = logcheck::cross_check(&entries, &items, retained_from, &mut findings);
    println!("{}", findings.summary());
    println!(
        "served items: {} matched to their entries, {} stored before the log began, {} entries past the retention",
        cov.matched, cov.before_log, cov.expired
    );
    for p in findings.problems.iter().skip(1).take(60) {
        println!("  {p}");
    }
    let ok = findings.problems.is_empty();
    if let (true, Some(out)) = (ok, &a.save) {
        write_out(out, &note)?;
    }
    Ok(ok)
}

/// The first day of the month `months` back: entries stored before it may be gone (0: none).
fn retention_start(now: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    let first = now.date_naive().with_day(1)?;
    let start = first.checked_sub_months(chrono::Months::new(months))?;
    (months > 0).then(|| start.and_hms_opt(0, 0, 0).map(|t| t.and_utc())).flatten()
}

/// Every entry the log serves below `size`, with its index: whole bundles, and where a bundle
/// is not served, each of its entries one by one (a log that lost some entries still shows the
/// others); what is not served at all is a problem.
async fn served_entries(api: &Api, size: u64, problems: &mut Vec<String>) -> Vec<(u64, Vec<u8>)> {
    let log = LOG;
    // The size is the server's word: reserve a bounded amount, grow as entries arrive.
    let mut entries = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
    for b in bundles_for_size(size) {
        let bundle = match api.get(&format!("{log}/{}", b.path()), &[]).await {
            Ok(resp) => resp.bytes().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        let decoded = bundle.and_then(|data| {
            decode_bundle(&data)
                .map(|got| got.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
        match decoded {
            Ok(got) => entries.extend((b.first()..).zip(got)),
            Err(e) => {
                problems.push(format!("entry bundle {} is not served whole: {e:#}", b.path()));
                let mut unserved: Vec<(u64, String)> = vec![];
                for i in b.first()..b.first() + u64::from(b.width) {
                    match entry_at(api, i, size).await {
                        Ok(e) => entries.push((i, e)),
                        Err(e) => unserved.push((i, format!("{e:#}"))),
                    }
                }
                if let (Some((first, why)), Some((last, _))) = (unserved.first(), unserved.last()) {
                    problems.push(format!(
                        "{} entries of the checkpoint's {size} are not served (indexes {first} to {last}): {why}",
                        unserved.len()
                    ));
                }
            }
        }
    }
    entries
}

async fn entry_at(api: &Api, index: u64, size: u64) -> anyhow::Result<Vec<u8>> {
    let log = LOG;
    // Against the checkpoint's size, or — when the log holds fewer entries now — the smallest
    // tree holding it (only the entry is wanted here).
    let proof = |size: u64| {
        let q = [("index", Some(index.to_string())), ("size", Some(size.to_string()))];
        async move { api.get_json::<Value>(&format!("{log}/proof/inclusion"), &q).await }
    };
    let v = match proof(size).await {
        Ok(v) => v,
        Err(_) => proof(index + 1).await?,
    };
    let text = v["entry"].as_str().context("no entry in the answer")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
}

/// The log's stored leaf hashes (its level-0 tiles) below `size`; None where not served.
async fn stored_leaves(api: &Api, size: u64, problems: &mut Vec<String>) -> Vec<Option<[u8; 32]>> {
    let log = LOG;
    let mut leaves = vec![];
    for t in tiles_for_size(size).into_iter().filter(|t| t.level == 0) {
        let got = match api.get(&format!("{log}/{}", t.path()), &[]).await {
            Ok(resp) => resp.bytes().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match got {
            Ok(data) if data.len() == usize::from(t.width) * 32 => {
                leaves.extend(data.chunks(32).map(|h| <[u8; 32]>::try_from(h).ok()));
            }
            Ok(data) => {
                problems.push(format!(
                    "tile {} holds {} bytes, not {}",
                    t.path(),
                    data.len(),
                    usize::from(t.width) * 32
                ));
                leaves.extend(std::iter::repeat_n(None, usize::from(t.width)));
            }
            Err(e) => {
                problems.push(format!("tile {} is not served: {e:#}", t.path()));
                leaves.extend(std::iter::repeat_n(None, usize::from(t.width)));
            }
        }
    }
    leaves
}

/// Base64 hashes of a JSON array.
fn hashes_of(v: &Value) -> anyhow::Result<Vec<[u8; 32]>> {
    v.as_array()
        .context("not a list of hashes")?
        .iter()
        .map(|h| {
            let raw = base64::engine::general_purpose::STANDARD.decode(h.as_str().context("a hash is not a string")?)?;
            <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| anyhow::anyhow!("a hash of {} bytes", raw.len()))
        })
        .collect()
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

async fn export_cmd(a: ExportArgs) -> anyhow::Result<bool> {
    use tokio::io::AsyncWriteExt;
    let api = Api::new(&a.api)?;
    let format = match a.format {
        ExportFormat::Ndjson => "ndjson",
        ExportFormat::Csv => "csv",
    };
    let previous = match &a.previous_checkpoint {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let note = Note::parse(&bytes).with_context(|| format!("{}: not a signed checkpoint", p.display()))?;
            let cp = Checkpoint::parse(&note.text).with_context(|| format!("{}: not a checkpoint", p.display()))?;
            Some(cp.size.to_string())
        }
        None => None,
    };
    let q = [
        ("since", rfc3339(a.since)),
        ("until", rfc3339(a.until)),
        ("format", Some(format.into())),
        ("previous_size", previous),
    ];
    let resp = api.get(&format!("{}/export", BASE), &q).await?;
    let export_id = resp
        .headers()
        .get(EXPORT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .context("the answer names no export id")?;
    let mut file = tokio::fs::File::create(&a.out)
        .await
        .with_context(|| format!("creating {}", a.out.display()))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .context("the export stream broke off (no manifest is stored for it)")?
    {
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    let signed: SignedManifest = api.get_json(&format!("{}/exports/{export_id}", BASE), &[]).await?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&signed.signature)
        .context("the signature is not base64")?;
    let (manifest_path, sig_path) = (sibling(&a.out, ".manifest.json"), sibling(&a.out, ".sig"));
    std::fs::write(&manifest_path, signed.manifest.as_bytes())?;
    std::fs::write(&sig_path, &signature)?;
    let manifest: Manifest = serde_json::from_str(&signed.manifest).context("the manifest is not a manifest")?;
    let digest = chain::hex(&hasher.finalize());
    let whole = digest == manifest.content_sha256 && bytes == manifest.content_bytes;
    println!(
        "export {export_id}: {bytes} bytes, {} records, {} amendments, {} break-glass events -> {} (+ {}, {}); SHA-256 {digest} {}",
        manifest.counts.records,
        manifest.counts.amendments,
        manifest.counts.break_glass_events,
        a.out.display(),
        manifest_path.display(),
        sig_path.display(),
        if whole {
            "matches the manifest"
        } else {
            "DOES NOT match the manifest"
        }
    );
    println!(
        "check it offline: audit-guard verify-export {} --public-key <Data Storage's export signing key> --log-key <log.key.pub> [--checkpoint <saved>] [--save <new>]",
        a.out.display()
    );
    Ok(whole)
}

fn read_verifier_key(path: &Path) -> anyhow::Result<VerifierKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    VerifierKey::parse(text.trim()).with_context(|| format!("the key {}", path.display()))
}

fn log_trust(a: &VerifyExportArgs) -> anyhow::Result<Option<LogTrust>> {
    let Some(path) = &a.log_key else { return Ok(None) };
    let key = read_verifier_key(path)?;
    let saved = match &a.checkpoint {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Some(open_checkpoint(&bytes, &key, &p.display().to_string())?)
        }
        None => None,
    };
    let witnesses = a.witness_key.iter().map(|p| read_verifier_key(p)).collect::<anyhow::Result<_>>()?;
    Ok(Some(LogTrust { key, saved, witnesses }))
}

fn verify_export_cmd(a: &VerifyExportArgs) -> anyhow::Result<bool> {
    let manifest_path = a.manifest.clone().unwrap_or_else(|| sibling(&a.file, ".manifest.json"));
    let sig_path = a.signature.clone().unwrap_or_else(|| sibling(&a.file, ".sig"));
    let manifest = std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let signature = std::fs::read(&sig_path).with_context(|| format!("reading {}", sig_path.display()))?;
    let pem = std::fs::read_to_string(&a.public_key).with_context(|| format!("reading {}", a.public_key.display()))?;
    let public = signing::public_key_from_pem(&pem)?;
    let trust = log_trust(a)?;
    let file = std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
    let c = match check_export(file, &manifest, &signature, &public, trust.as_ref()) {
        Ok(c) => c,
        Err(why) => {
            println!("FAILED: {}: {why}", a.file.display());
            return Ok(false);
        }
    };
    let summary = format!(
        "{} is export {} signed by key {} ({} to {}): {} records, {} amendments, {} break-glass events, {} bytes, SHA-256 {}",
        a.file.display(),
        c.manifest.export_id,
        c.manifest.signing_key_id,
        rfc3339(c.manifest.since).unwrap_or_else(|| "the beginning".into()),
        rfc3339(c.manifest.until).unwrap_or_else(|| "the end".into()),
        c.counted.records,
        c.counted.amendments,
        c.counted.break_glass_events,
        c.manifest.content_bytes,
        c.manifest.content_sha256
    );
    let Some(log) = c.log else {
        println!("OK: {summary}");
        println!("the transparency log's evidence was not checked: give --log-key (and --checkpoint) to check the rows against the log");
        return Ok(true);
    };
    let f = &log.findings;
    let cosigned = if log.cosignatures.is_empty() {
        "no witness cosignature".to_string()
    } else {
        format!("cosigned by {}", log.cosignatures.join(", "))
    };
    if let Some(first) = f.problems.first() {
        println!("NOT consistent: {summary}: {} problem(s); first: {first}", f.problems.len());
        for p in f.problems.iter().skip(1).take(80) {
            println!("  {p}");
        }
        return Ok(false);
    }
    println!("OK: {summary}");
    println!(
        "consistent with the transparency log: checkpoint of {} entries signed by {}, {cosigned}; {} rows proven in it, \
         {} stored after the export began (not yet in the log), {} stored before the log began, \
         {} other entries of the range listed; {}",
        log.size,
        trust.as_ref().map_or(String::new(), |t| t.key.to_string()),
        f.proven,
        f.after_start,
        f.before_log,
        f.others,
        trust
            .as_ref()
            .and_then(|t| t.saved.as_ref())
            .map_or("no saved checkpoint given".to_string(), |s| format!(
                "extends the saved checkpoint of {} entries",
                s.size
            ))
    );
    if let Some(out) = &a.save {
        write_out(out, log.note.as_bytes())?;
        println!("saved the checkpoint to {}", out.display());
    }
    Ok(true)
}

/// The buffered writers' drops over the period, from Prometheus.
async fn writer_drops(prometheus: &str, r: &PeriodReport, ca: Option<&Path>) -> anyhow::Result<f64> {
    let q = report::drops_query(r.since, r.until);
    let http = crate::client::http_builder(ca)?.timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/api/v1/query", prometheus.trim_end_matches('/'));
    let answer: Value = http
        .get(&url)
        .query(&present(&[("query", Some(q)), ("time", rfc3339(Some(r.until)))]))
        .send()
        .await
        .with_context(|| format!("asking Prometheus at {prometheus}"))?
        .json()
        .await
        .context("reading Prometheus' answer")?;
    report::prometheus_scalar(&answer).map_err(anyhow::Error::msg)
}

async fn report_cmd(a: ReportArgs) -> anyhow::Result<bool> {
    let api = Api::new(&a.api)?;
    let q = [
        ("since", rfc3339(Some(a.since))),
        ("until", rfc3339(Some(a.until))),
        ("format", Some("json".into())),
        ("retention_months", Some(a.retention_months.to_string())),
    ];
    let mut r: PeriodReport = api.get_json(&format!("{}/report", BASE), &q).await?;
    if let Some(prom) = &a.prometheus_url {
        let dropped = writer_drops(prom, &r, a.api.ca_file.as_deref()).await?;
        r.writer_drops.dropped = Some(dropped);
        r.writer_drops.note = format!("{} from {prom}", report::drops_query(r.since, r.until));
    }
    let text = match a.format {
        ReportFormat::Markdown => report::to_markdown(&r),
        ReportFormat::Json => serde_json::to_string_pretty(&r)?,
        ReportFormat::Html => report::to_html(&r),
    };
    match &a.out {
        Some(p) => write_out(p, text.as_bytes())?,
        None => print!("{text}"),
    }
    if a.out.is_some() {
        eprintln!("{}", r.chain.summary());
    }
    Ok(r.chain.result == Verdict::Intact)
}

/// Records of a period, through the API's keyset pages.
async fn records_from_api(api: &Api, since: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<Vec<RecordRef>> {
    let base = BASE;
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = [
            ("since", rfc3339(Some(since))),
            ("until", rfc3339(Some(until))),
            ("limit", Some("1000".into())),
            ("cursor", cursor.clone()),
        ];
        let page: Value = api.get_json(base, &q).await?;
        for item in page.get("items").and_then(|i| i.as_array()).into_iter().flatten() {
            out.push(serde_json::from_value(item.clone()).context("a listed record is not a record")?);
        }
        match page.get("next_cursor").and_then(|c| c.as_str()) {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

/// Records from an NDJSON export (check it with `verify-export` first).
pub fn records_from_export(text: &str) -> anyhow::Result<Vec<RecordRef>> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("export line {}", n + 1))?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("record") {
            let rec = v.get("record").cloned().unwrap_or_default();
            out.push(serde_json::from_value(rec).with_context(|| format!("export line {}: not a record", n + 1))?);
        }
    }
    Ok(out)
}

/// `--tls-server-name`: the base URL with `name` as its host, and the addresses of the URL's own
/// host and port to connect to, so the TLS check is made against `name`.
fn connect_as(base: &str, name: &str) -> anyhow::Result<(String, Vec<std::net::SocketAddr>)> {
    use std::net::ToSocketAddrs;
    let mut url = reqwest::Url::parse(base).with_context(|| format!("--url {base:?}"))?;
    let host = url.host_str().context("--url has no host")?.to_string();
    let port = url.port_or_known_default().context("--url has no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}:{port}"))?
        .collect();
    url.set_host(Some(name)).with_context(|| format!("--tls-server-name {name:?}"))?;
    Ok((url.as_str().trim_end_matches('/').to_string(), addrs))
}

/// The API server client of `--kubeconfig`/`--context`, or kube's default (KUBECONFIG,
/// ~/.kube/config, in-cluster).
async fn kube_client(kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
        (None, None) => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Which SignalProcessings the API server has now.
async fn live_state(namespaces: &[String], kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<Live> {
    use kube::api::{Api as KubeApi, ListParams};
    let client = kube_client(kubeconfig, context)
        .await
        .context("reading the API server's current state needs a kubeconfig (--kubeconfig, or pass --no-cluster)")?;
    let apis: Vec<KubeApi<crate::crd::SignalProcessing>> = if namespaces.is_empty() {
        vec![KubeApi::all(client)]
    } else {
        namespaces.iter().map(|ns| KubeApi::namespaced(client.clone(), ns)).collect()
    };
    let mut live = Live::new();
    for api in apis {
        let list = api.list(&ListParams::default()).await.context("listing signalprocessings")?;
        for sp in list.items {
            let m = sp.metadata;
            if let (Some(ns), Some(name), Some(uid), Some(created)) = (m.namespace, m.name, m.uid, m.creation_timestamp) {
                live.insert(
                    (ns, name),
                    LiveObject {
                        uid,
                        created: created.0,
                        deleting: m.deletion_timestamp.is_some(),
                    },
                );
            }
        }
    }
    Ok(live)
}

async fn witness_cmd(a: WitnessArgs) -> anyhow::Result<bool> {
    let mut stats = LogStats::default();
    let mut events = vec![];
    for f in &a.audit_logs {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        witness::read_events(text.lines(), &mut stats, &mut events);
    }
    let (Some(first), Some(last)) = (stats.first, stats.last) else {
        bail!(
            "no audit events in {} ({} lines, {} unreadable): is the API server run with the audit policy?",
            a.audit_logs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            stats.lines,
            stats.unreadable
        );
    };
    let lifecycles = witness::lifecycles(&events);
    let records = match &a.export {
        Some(f) => records_from_export(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)?,
        None => {
            let api = Api::new(&a.api)?;
            let lookback = chrono::Duration::from_std(a.lookback).unwrap_or(chrono::Duration::days(31));
            records_from_api(&api, first - lookback, last + chrono::Duration::minutes(5)).await?
        }
    };
    let live = if a.no_cluster {
        None
    } else {
        Some(live_state(&a.namespaces, a.kubeconfig.as_deref(), a.context.as_deref()).await?)
    };
    let mut report = witness::judge(&lifecycles, &stats, live.as_ref(), &records, &a.namespaces);
    if a.export.is_none() {
        let deletions = witness::deletion_records(&lifecycles, &records, &a.namespaces);
        let indexes = log_indexes(
            &Api::new(&a.api)?,
            deletions.iter().flat_map(|(_, _, recs)| recs.iter().map(|r| r.id.as_str())),
        )
        .await?;
        witness::tie_to_log(&mut report, &deletions, &indexes);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", witness::to_text(&report));
    }
    Ok(report.ok())
}

/// The transparency-log index of each record that has one, from Data Storage's inclusion
/// endpoint (404: not in the log). A record sequenced but not yet under a checkpoint is asked
/// again; a checkpoint follows every sequencing round, so a few seconds of asking again in all
/// (not per record) cover every record.
async fn log_indexes<'a>(api: &Api, ids: impl Iterator<Item = &'a str>) -> anyhow::Result<HashMap<String, u64>> {
    #[derive(serde::Deserialize)]
    struct Inclusion {
        index: u64,
    }
    let mut indexes = HashMap::new();
    let mut tries = 0;
    for id in ids.collect::<BTreeSet<_>>() {
        let path = "/api/v1/log/proof/inclusion";
        let query = [("kind", Some("record".to_string())), ("id", Some(id.to_string()))];
        let found = loop {
            match api.get_json_if_found::<Inclusion>(path, &query).await {
                Err(_) if tries < 10 => tries += 1,
                answer => break answer?,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if let Some(found) = found {
            indexes.insert(id.to_string(), found.index);
        }
    }
    Ok(indexes)
}

fn create_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (an existing key is never overwritten)", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn keys_cmd(a: &KeysArgs) -> anyhow::Result<bool> {
    if a.chain_key.is_none() && a.signing_key.is_none() && a.log_key.is_none() && a.witness_key.is_none() {
        bail!("give --chain-key <file>, --signing-key <file>, --log-key <file> and/or --witness-key <file>");
    }
    if let Some(path) = &a.chain_key {
        let id = a.key_id.clone().unwrap_or_else(|| Utc::now().format("%Y%m%dT%H%M%S").to_string());
        let line = chain::generate_key_line(&id).map_err(anyhow::Error::msg)?;
        if path.exists() {
            let mut text = std::fs::read_to_string(path)?;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            ChainKeys::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            std::fs::write(path, text)?;
            println!(
                "appended chain key {id} to {} (active from the next restart; earlier keys keep verifying)",
                path.display()
            );
        } else {
            create_private(path, &line)?;
            println!("wrote chain key {id} to {}", path.display());
        }
    }
    if let Some(path) = &a.signing_key {
        let (private, public) = signing::generate_signing_key()?;
        create_private(path, &private)?;
        let pub_path = sibling(path, ".pub");
        std::fs::write(&pub_path, &public)?;
        let id = signing::key_id(&signing::public_key_from_pem(&public)?);
        println!(
            "wrote export signing key {id} to {} and its public key to {}",
            path.display(),
            pub_path.display()
        );
    }
    if let Some(path) = &a.log_key {
        write_note_key(path, &a.log_name, ALG_ED25519, "transparency log key")?;
    }
    if let Some(path) = &a.witness_key {
        write_note_key(path, &a.witness_name, ALG_COSIGNATURE_V1, "witness key")?;
    }
    Ok(true)
}

/// A fresh signed-note key: the private key in `path` (0600), the verifier key in `<path>.pub`.
fn write_note_key(path: &Path, name: &str, alg: u8, what: &str) -> anyhow::Result<()> {
    let key = SignerKey::generate(name, alg)?;
    create_private(path, &format!("{}\n", key.to_secret_string()))?;
    let pub_path = sibling(path, ".pub");
    std::fs::write(&pub_path, format!("{}\n", key.verifier()))?;
    println!(
        "wrote {what} {} to {} and its verifier key to {}",
        key.verifier(),
        path.display(),
        pub_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_come_from_verify_results_and_manifests() {
        let h = Head {
            shard: 1,
            seq: 5,
            hash: [3; 32],
        };
        let from_verify = serde_json::json!({"result": "intact", "heads": [h]}).to_string();
        assert_eq!(anchors_from(&from_verify).unwrap(), vec![h.clone()]);
        let manifest = serde_json::json!({"chain_heads": [h]}).to_string();
        assert_eq!(anchors_from(&manifest).unwrap(), vec![h.clone()]);
        let signed = serde_json::json!({"manifest": manifest, "signature": ""}).to_string();
        assert_eq!(anchors_from(&signed).unwrap(), vec![h.clone()]);
        assert!(anchors_from("{}").is_err());
        assert_eq!(anchors_param(&[h]).unwrap(), format!("1:5:{}", "03".repeat(32)));
    }

    #[test]
    fn queries_skip_absent_values_and_are_encoded_by_reqwest() {
        let pairs = present(&[("since", Some("2026-01-01T00:00:00+01:00".into())), ("until", None)]);
        assert_eq!(pairs, vec![("since", "2026-01-01T00:00:00+01:00".to_string())]);
        assert!(present(&[("a", None)]).is_empty());
        let req = reqwest::Client::new().get("http://ds/x").query(&pairs).build().unwrap();
        assert_eq!(req.url().query(), Some("since=2026-01-01T00%3A00%3A00%2B01%3A00"));
    }

    #[test]
    fn records_are_read_from_an_ndjson_export() {
        let text = "{\"kind\":\"record\",\"id\":\"a\",\"record\":{\"id\":\"a\",\"namespace\":\"ns\",\"name\":\"sp\",\"completed_at\":\"2026-01-01T00:00:00Z\"}}\n\
                    {\"kind\":\"break_glass\",\"id\":\"e\",\"event\":{}}\n";
        let recs = records_from_export(text).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].name.as_deref(), Some("sp"));
        assert!(records_from_export("{").is_err());
    }
}
