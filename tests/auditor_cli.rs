//! The auditor's flags for reaching Data Storage from outside the cluster, with the real binary
//! against a real Data Storage serving TLS under its Service name: through a port-forward the
//! address is 127.0.0.1 or localhost, which the certificate does not name, so `--tls-server-name`
//! says which name to check; `--since`/`--until` take dates and durations back from now.

mod support;

use std::process::Command;

use support::datastorage::*;

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AUDIT_GUARD_TLS_SERVER_NAME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn through_a_port_forward_the_certificate_is_checked_against_the_named_server() {
    let svc = DataStorage::launch(Options::sqlite().tls(Tls::Issued)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("reader.token");
    std::fs::write(&token, READER_TOKEN).unwrap();
    let ca = svc.ca_file();
    let (token, ca) = (token.to_str().unwrap(), ca.to_str().unwrap());
    // What `kubectl port-forward` gives: the service on localhost, a name its certificate lacks.
    let forwarded = format!("https://localhost:{}", svc.port);
    let common = ["--url", forwarded.as_str(), "--token-file", token, "--ca-file", ca];

    let (code, out) = cli(&[&["verify"][..], &common].concat());
    assert_eq!(code, 2, "verify reached a server whose certificate does not name localhost:\n{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");

    let named = [&common[..], &["--tls-server-name", DS_HOST]].concat();
    let (code, out) = cli(&[&["verify"][..], &named].concat());
    assert_eq!(code, 0, "verify with --tls-server-name:\n{out}");
    // A name the certificate does not carry is refused just the same.
    let wrong = [&common[..], &["--tls-server-name", "elsewhere.example"]].concat();
    let (code, out) = cli(&[&["verify"][..], &wrong].concat());
    assert_eq!(code, 2, "{out}");

    // A period as a date and a duration back from now.
    let since = (chrono::Utc::now() - chrono::Duration::days(7)).format("%Y-%m-%d").to_string();
    let (code, out) = cli(&[&["report", "--since", &since, "--until", "1min ago"][..], &named].concat());
    assert_eq!(code, 0, "report --since {since} --until '1min ago':\n{out}");
    assert!(out.contains(&since), "the report does not start at {since}:\n{out}");
    let (code, out) = cli(&[&["report", "--since", "last week", "--until", "1min"][..], &named].concat());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a moment"), "{out}");
}
