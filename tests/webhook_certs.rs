//! `audit-guard certs`: files, key permissions, names, the printed caBundle, and --reuse-ca.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use base64::Engine;

fn certs(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .args(["certs", "--service", "hook", "--namespace", "guard", "--out-dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Parses the serving certificate with openssl and returns its text form.
fn describe(cert: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn verifies(dir: &std::path::Path) -> bool {
    Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("ca.crt"))
        .arg(dir.join("tls.crt"))
        .status()
        .unwrap()
        .success()
}

#[test]
fn certs_writes_a_ca_and_a_serving_cert_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let printed = certs(dir.path(), &["--extra-san", "10.1.2.3,hook.example.org"]);
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(printed.trim()).unwrap(), ca);
    for (file, mode) in [("ca.key", 0o600), ("tls.key", 0o600), ("tls.crt", 0o644), ("ca.crt", 0o644)] {
        let got = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{file}");
    }
    let text = describe(&dir.path().join("tls.crt"));
    for name in [
        "DNS:hook.guard.svc",
        "DNS:hook.guard.svc.cluster.local",
        "IP Address:10.1.2.3",
        "DNS:hook.example.org",
        "TLS Web Server Authentication",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    assert!(verifies(dir.path()));

    // --reuse-ca keeps the CA (and so every caBundle already installed) and issues a new cert under it.
    let old_cert = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let printed_again = certs(dir.path(), &["--reuse-ca"]);
    assert_eq!(printed_again, printed);
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca);
    assert_ne!(std::fs::read(dir.path().join("tls.crt")).unwrap(), old_cert);
    assert!(verifies(dir.path()));
}
