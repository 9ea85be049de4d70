//! The Go tlog verifier (tests/fixtures/tlog-verifier, golang.org/x/mod's sumdb): built once
//! per test binary, run on a directory holding a log as tlog-tiles publishes it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The verifier's binary, built from its module (tests/fixtures/tlog-verifier/build.sh).
pub fn verifier() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tlog-verifier/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running tests/fixtures/tlog-verifier/build.sh (needs Go and the Go module proxy)");
        assert!(out.status.success(), "building the Go tlog verifier failed (see stderr above)");
        PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim())
    })
}

pub fn run_verifier(dir: &Path) -> Output {
    Command::new(verifier()).arg(dir).output().expect("running the Go tlog verifier")
}

/// Writes `data` at `rel` under `dir`, creating directories.
pub fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}
