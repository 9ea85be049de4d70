//! The transparency log witnessed by another implementation: torchwood's litewitness (Go, built
//! from filippo.io/torchwood by tools/litewitness/build.sh), its Ed25519 key in an ssh-agent of
//! this test, its state in a fresh SQLite database, our log registered with witnessctl. A real
//! Data Storage (SQLite) with a witness policy naming litewitness gets its checkpoints
//! cosigned, and the cosignature verifies with src/evidence against the key taken from the ssh
//! public key. A fork (another root at the size litewitness cosigned) and a smaller tree,
//! signed with the log's own key, are refused and never cosigned.
//!
//! Nothing is skipped: when Go, the module proxy, ssh-agent or litewitness are missing or
//! fail, the test fails and says why.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use audit_guard::evidence::merkle::{consistency_proof, empty_root, leaf_hash, Hash, MemoryTree};
use audit_guard::evidence::note::{Note, SignerKey, VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use audit_guard::evidence::witness::{accept_cosignature, SIZE_CONTENT_TYPE};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use support::controlplane::free_port;
use support::datastorage::*;
use support::wait_for;
use support::witness::*;

const ORIGIN: &str = "audit-guard.test/litewitness-log";
const WITNESS: &str = "witness.test/litewitness";

/// The directory holding litewitness and witnessctl, built once per test binary.
fn torchwood_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/litewitness/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "building litewitness from filippo.io/torchwood failed (needs Go and the Go module proxy; see stderr above)"
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim())
    })
}

/// Runs a command that must succeed; returns its stdout and stderr.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

/// A child process killed (and reaped) on drop, also when the test panics.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A dedicated ssh-agent on its own socket holding one fresh Ed25519 key, as litewitness's
/// README runs it.
struct Agent {
    socket: PathBuf,
    /// `SHA256:…`, how litewitness's `-key` selects the key.
    fingerprint: String,
    /// The raw Ed25519 public key, from the `.pub` file.
    public: VerifyingKey,
    _child: Killed,
}

impl Agent {
    async fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running ssh-agent (Debian's openssh-client)");
        let mut child = Killed(child);
        wait_for("ssh-agent's socket", Duration::from_secs(10), || {
            let exited = child.0.try_wait().ok().flatten();
            let up = socket.exists();
            async move {
                if let Some(status) = exited {
                    anyhow::bail!("ssh-agent exited ({status})");
                }
                Ok(up.then_some(()))
            }
        })
        .await
        .unwrap();
        let key = dir.join("witness_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
                .arg(&key),
        );
        run_ok(Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &socket));
        let pub_file = key.with_extension("pub");
        let listed = run_ok(Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(&pub_file));
        let fingerprint = listed
            .split_whitespace()
            .nth(1)
            .filter(|f| f.starts_with("SHA256:"))
            .unwrap_or_else(|| panic!("ssh-keygen -l printed no SHA256 fingerprint: {listed}"))
            .to_string();
        let line = std::fs::read_to_string(&pub_file).unwrap();
        Agent {
            socket,
            fingerprint,
            public: ssh_ed25519_public(&line),
            _child: child,
        }
    }
}

/// The 32-byte key of an OpenSSH `ssh-ed25519 <base64 blob>` line; the blob is two
/// length-prefixed strings, the algorithm name and the key.
fn ssh_ed25519_public(line: &str) -> VerifyingKey {
    let mut fields = line.split_whitespace();
    assert_eq!(fields.next(), Some("ssh-ed25519"), "{line}");
    let blob = B64.decode(fields.next().expect("a key blob")).expect("base64");
    let (name, rest) = ssh_string(&blob);
    assert_eq!(name, b"ssh-ed25519");
    let (key, rest) = ssh_string(rest);
    assert!(rest.is_empty(), "trailing bytes in the key blob");
    VerifyingKey::from_bytes(key.try_into().expect("an Ed25519 key is 32 bytes")).expect("an Ed25519 point")
}

fn ssh_string(b: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = b.split_first_chunk::<4>().expect("a length prefix");
    rest.split_at(u32::from_be_bytes(*len) as usize)
}

/// litewitness on plain HTTP with its key in `agent` and its state in `db`.
struct LiteWitness {
    url: String,
    log: PathBuf,
    db: PathBuf,
    _child: Killed,
}

impl LiteWitness {
    async fn start(agent: &Agent, db: &Path, dir: &Path) -> LiteWitness {
        let port = free_port().unwrap();
        let log = dir.join("litewitness.log");
        let child = Command::new(torchwood_bin().join("litewitness"))
            .arg("-db")
            .arg(db)
            .arg("-ssh-agent")
            .arg(&agent.socket)
            .args(["-name", WITNESS, "-key", &agent.fingerprint])
            .args(["-listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("running litewitness");
        let mut child = Killed(child);
        wait_listening("litewitness", &mut child.0, port, &log).await;
        LiteWitness {
            url: format!("http://127.0.0.1:{port}"),
            log,
            db: db.to_path_buf(),
            _child: child,
        }
    }

    /// The verifier key litewitness logs at start (`vkey=…`).
    fn logged_vkey(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines()
            .find_map(|l| l.split_once(" vkey=").map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| panic!("litewitness logged no verifier key:\n{log}"))
    }

    async fn add(&self, old: u64, proof: Vec<Hash>, checkpoint: &[u8]) -> (u16, String, Vec<u8>) {
        add_checkpoint(&self.url, old, proof, checkpoint).await
    }

    /// What litewitness's database holds for our log: (size, root hash).
    fn state(&self) -> (u64, Hash) {
        let out = witnessctl(&["list-logs", "-db", self.db.to_str().unwrap()]);
        let line = out
            .lines()
            .find(|l| l.contains(ORIGIN))
            .unwrap_or_else(|| panic!("witnessctl list-logs does not list {ORIGIN}:\n{out}"));
        let v: Value = serde_json::from_str(line).unwrap();
        let root = B64.decode(v["root_hash"].as_str().unwrap()).unwrap();
        (v["size"].as_u64().unwrap(), root.try_into().unwrap())
    }
}

fn witnessctl(args: &[&str]) -> String {
    run_ok(Command::new(torchwood_bin().join("witnessctl")).args(args))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn litewitness_cosigns_our_checkpoints_and_refuses_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    // Declared first, dropped last: litewitness goes before its agent.
    let agent = Agent::start(dir.path()).await;

    // The witness's cosignature key as our code forms it from the ssh public key; litewitness
    // must announce the same one.
    let witness = VerifierKey::new(WITNESS, ALG_COSIGNATURE_V1, agent.public).unwrap();
    let db = dir.path().join("litewitness.db");
    let log = SignerKey::generate(ORIGIN, ALG_ED25519).unwrap();
    let db_arg = db.to_str().unwrap();
    witnessctl(&["add-log", "-db", db_arg, "-origin", ORIGIN]);
    witnessctl(&["add-key", "-db", db_arg, "-origin", ORIGIN, "-key", &log.verifier().to_string()]);
    let lw = LiteWitness::start(&agent, &db, dir.path()).await;
    assert_eq!(lw.logged_vkey(), witness.to_string());
    assert_eq!(lw.state(), (0, empty_root()));

    let log_file = dir.path().join("log.key");
    std::fs::write(&log_file, format!("{}\n", log.to_secret_string())).unwrap();
    let policy = dir.path().join("witnesses");
    std::fs::write(&policy, format!("# torchwood's litewitness\nwitness {witness} {}\n", lw.url)).unwrap();
    let svc = DataStorage::launch(Options::sqlite().args(&[
        "--log-signing-key-file",
        log_file.to_str().unwrap(),
        "--witness-policy-file",
        policy.to_str().unwrap(),
        "--log-sequence-interval",
        "100ms",
    ]))
    .await;

    let before = now();
    store_records(&svc, "lw1", 6).await;
    let (cp, note, ts) = cosigned_checkpoint(&svc, log.verifier(), &witness, 6).await;
    assert_eq!(cp.size, 6, "six records, six entries");
    // Exactly the log's signature and litewitness's cosignature, made just now.
    assert_eq!(note.signatures.len(), 2, "{}", String::from_utf8_lossy(&note.to_bytes()));
    assert!(
        ts >= before.saturating_sub(5) && ts <= now() + 5,
        "cosigned at {ts}, test started at {before}"
    );
    // litewitness recorded exactly what it cosigned.
    assert_eq!(lw.state(), (cp.size, cp.root));

    // The honest checkpoint again (old = the size it knows, empty proof): 200, and the answer's
    // line verifies with our code against the key from the ssh public key.
    let (s, _, answer) = lw.add(cp.size, vec![], &signed_checkpoint(&log, cp.size, cp.root)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&answer));
    let mut again = Note::parse(&signed_checkpoint(&log, cp.size, cp.root)).unwrap();
    accept_cosignature(&mut again, &answer, &witness).unwrap();

    let refused = |s: u16, body: &[u8]| {
        assert!(
            !body.starts_with("\u{2014}".as_bytes()) && !String::from_utf8_lossy(body).contains(WITNESS),
            "answered {s} with a cosignature: {}",
            String::from_utf8_lossy(body)
        );
    };
    // A fork: another root at the size litewitness cosigned, signed with the log's key.
    let mut other = cp.root;
    other[0] ^= 1;
    let fork = signed_checkpoint(&log, cp.size, other);
    // Shown as a log that claims to start afresh: 409 naming the size it cosigned.
    let (s, ct, body) = lw.add(0, vec![], &fork).await;
    refused(s, &body);
    assert_eq!((s, ct.as_str()), (409, SIZE_CONTENT_TYPE), "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, format!("{}\n", cp.size).into_bytes());
    // With a consistency proof from an earlier size of the forked history: 409 too.
    let mut forked = MemoryTree::new();
    for i in 0..cp.size {
        forked.append(leaf_hash(format!("forked entry {i}").as_bytes()));
    }
    let proof = consistency_proof(&forked, 3, cp.size).unwrap();
    let (s, _, body) = lw.add(3, proof, &signed_checkpoint(&log, cp.size, forked.root())).await;
    refused(s, &body);
    assert_eq!((s, body), (409, format!("{}\n", cp.size).into_bytes()));
    // From the size it cosigned, with the empty proof equal sizes take: C2SP tlog-witness says
    // 409; litewitness v0.6.1 runs it as a consistency proof and answers 422. Either way no
    // cosignature.
    let (s, _, body) = lw.add(cp.size, vec![], &fork).await;
    refused(s, &body);
    assert_eq!(s, 422, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("consistency proof"));

    // A smaller tree: from size 0 (or any size but the one it cosigned), 409 naming that size;
    // claiming the cosigned size as `old` is malformed (old > checkpoint size): 400.
    let smaller = signed_checkpoint(&log, cp.size - 1, [7; 32]);
    let (s, ct, body) = lw.add(0, vec![], &smaller).await;
    refused(s, &body);
    assert_eq!(
        (s, ct.as_str(), body),
        (409, SIZE_CONTENT_TYPE, format!("{}\n", cp.size).into_bytes())
    );
    let (s, _, body) = lw.add(cp.size, vec![], &smaller).await;
    refused(s, &body);
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));

    // A log litewitness does not follow: 403 (C2SP tlog-witness says 404).
    let stranger = SignerKey::generate("audit-guard.test/unknown-log", ALG_ED25519).unwrap();
    let unknown = signed_checkpoint(&stranger, 1, [1; 32]);
    let (s, _, body) = lw.add(0, vec![], &unknown).await;
    refused(s, &body);
    assert_eq!((s, String::from_utf8_lossy(&body).trim_end()), (403, "unknown log"));

    // Nothing refused moved litewitness's state.
    assert_eq!(lw.state(), (cp.size, cp.root));

    // The honest log goes on: Data Storage pushes from the size litewitness cosigned with a
    // consistency proof from its tiles, and litewitness accepts it.
    store_records(&svc, "lw2", 4).await;
    let (cp2, note2, _) = cosigned_checkpoint(&svc, log.verifier(), &witness, cp.size + 4).await;
    assert!(cp2.size >= cp.size + 4);
    assert_eq!(note2.signatures.len(), 2);
    let (size, root) = lw.state();
    assert!(size >= cp2.size, "litewitness is at {size}, Data Storage served {}", cp2.size);
    if size == cp2.size {
        assert_eq!(root, cp2.root);
    }
    assert_pushes_cosigned(&svc).await;
}
