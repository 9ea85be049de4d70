//! `make dist`: the release tarball an auditor downloads. Built twice (scripts/dist.sh, the same
//! static binary `make image` ships): its SHA-256 file checks with `sha256sum -c`, the bytes are
//! the same both times, and the binary it holds runs and offers the auditor's commands.

use std::path::Path;
use std::process::Command;

fn dist(out: &Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dist.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).env("DIST_DIR", out);
    let run = cmd.output().expect("bash runs");
    assert!(run.status.success(), "dist.sh failed: {}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8_lossy(&run.stdout).trim().to_string()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_release_tarball_checks_is_reproducible_and_runs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = dist(a.path());
    let second = dist(b.path());
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("audit-guard-{version}-x86_64-linux");
    assert!(first.ends_with(&format!("{name}.tar.gz")), "{first}");

    // The published digest checks, and a changed byte does not.
    run(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.tar.gz.sha256"))
        .current_dir(a.path()));
    let digest = |dir: &Path| std::fs::read_to_string(dir.join(format!("{name}.tar.gz.sha256"))).unwrap();
    assert_eq!(digest(a.path()), digest(b.path()), "two builds of one commit differ");
    let mut bytes = std::fs::read(&second).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&second, bytes).unwrap();
    let tampered = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.tar.gz.sha256"))
        .current_dir(b.path())
        .output()
        .unwrap();
    assert!(!tampered.status.success(), "sha256sum accepted a changed tarball");

    // What it holds, and that the binary runs on its own.
    let listing = run(Command::new("tar").arg("-tzf").arg(&first));
    let mut files: Vec<&str> = listing.lines().filter(|l| !l.ends_with('/')).collect();
    files.sort();
    let want: Vec<String> = ["CHANGELOG.md", "LICENSE", "README.md", "audit-guard", "docs/auditors.md"]
        .iter()
        .map(|f| format!("{name}/{f}"))
        .collect();
    assert_eq!(files, want.iter().map(String::as_str).collect::<Vec<_>>());
    let x = tempfile::tempdir().unwrap();
    run(Command::new("tar").arg("-xzf").arg(&first).current_dir(x.path()));
    let bin = x.path().join(&name).join("audit-guard");
    assert_eq!(run(Command::new(&bin).arg("--version")).trim(), format!("audit-guard {version}"));
    let help = run(Command::new(&bin).arg("--help"));
    for command in ["verify", "verify-log", "verify-export", "report", "witness"] {
        assert!(help.contains(command), "no `{command}` in the binary's help:\n{help}");
    }
}
