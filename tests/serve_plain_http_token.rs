//! `audit-guard serve` as a real process: a bearer token never goes to a plain-HTTP Data
//! Storage unless `--datastorage-allow-plain-http-token` says so. The process needs no API
//! server for this (webhook and controller are off; its kubeconfig names an address where
//! nothing listens): the refusal comes before anything else is tried.

use std::path::Path;
use std::process::{Child, Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn kubeconfig(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n\
         clusters: [{name: nowhere, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: nobody, user: {token: not-used}}]\n\
         contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]\n",
    )
    .unwrap();
    path
}

/// `serve` against an http Data Storage URL with a token file; its health port.
fn serve(dir: &Path, extra: &[&str]) -> (Child, u16) {
    let token = dir.join("token");
    std::fs::write(&token, "a-token-worth-stealing").unwrap();
    let health = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_audit-guard"))
        .env("KUBECONFIG", kubeconfig(dir))
        .env_remove("DATASTORAGE_ALLOW_PLAIN_HTTP_TOKEN")
        .args(["serve", "--disable-webhook", "--disable-controller"])
        .args(["--datastorage-url", "http://127.0.0.1:1"])
        .arg("--datastorage-token-file")
        .arg(&token)
        .args(["--metrics-addr", "127.0.0.1:0", "--health-addr", &format!("127.0.0.1:{health}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, health)
}

enum Outcome {
    Exited(std::process::Output),
    Healthy(Child),
}

/// Whichever comes first: the process exits, or its /healthz answers.
async fn outcome(mut child: Child, health: u16) -> Outcome {
    let url = format!("http://127.0.0.1:{health}/healthz");
    loop {
        if child.try_wait().unwrap().is_some() {
            return Outcome::Exited(child.wait_with_output().unwrap());
        }
        if let Ok(resp) = reqwest::get(&url).await {
            if resp.status() == 200 {
                return Outcome::Healthy(child);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_refuses_a_token_over_plain_http_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (child, health) = serve(dir.path(), &[]);
    match outcome(child, health).await {
        Outcome::Healthy(mut child) => {
            let _ = child.kill();
            panic!("serve started and would send its token over plain HTTP");
        }
        Outcome::Exited(out) => {
            assert!(!out.status.success(), "{:?}", out.status);
            let stderr = String::from_utf8_lossy(&out.stderr);
            for says in [
                "refusing to send the Data Storage token",
                "http://127.0.0.1:1",
                "--datastorage-allow-plain-http-token",
            ] {
                assert!(stderr.contains(says), "stderr should say {says:?}:\n{stderr}");
            }
            assert!(!stderr.contains("a-token-worth-stealing"), "the token itself is never printed");
        }
    }
}

#[tokio::test]
async fn serve_starts_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (child, health) = serve(dir.path(), &["--datastorage-allow-plain-http-token"]);
    match outcome(child, health).await {
        Outcome::Healthy(mut child) => {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        Outcome::Exited(out) => panic!("serve did not start: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
}
