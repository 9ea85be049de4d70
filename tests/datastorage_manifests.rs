//! What an admin applying manifests/base/datastorage.yaml gets: TLS on the probes and the port,
//! database URLs from mounted files (never the environment), Secret volumes at 0400 that the
//! non-root user can still read (fsGroup), the owner's URL only in the migrate init container,
//! and database Secrets that the admin creates rather than placeholders in the manifests.

use serde_yaml::Value;

fn docs() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/datastorage.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn of_kind(kind: &str) -> Vec<Value> {
    docs().into_iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

#[test]
fn the_deployment_serves_tls_and_reads_secrets_from_files() {
    let deployments = of_kind("Deployment");
    assert_eq!(deployments.len(), 1);
    let pod = &deployments[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["fsGroup"], 65532,
        "root-owned 0400 files are readable only through fsGroup"
    );

    let main = &pod["containers"][0];
    let args = strings(&main["args"]);
    assert!(args.contains(&"--tls-cert-dir=/etc/audit-guard/tls".to_string()), "{args:?}");
    assert!(
        args.contains(&"--database-url-file=/etc/audit-guard/db/url".to_string()),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a == "--plain-http"));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(main[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    let env = serde_yaml::to_string(&main["env"]).unwrap();
    assert!(
        !env.contains("DATABASE_URL") && main.get("envFrom").is_none(),
        "no database URL in the environment"
    );
    let mounts = serde_yaml::to_string(&main["volumeMounts"]).unwrap();
    assert!(!mounts.contains("db-owner"), "the service never sees the owner's URL");
    // The log's checkpoint key, from a Secret of its own, mounted where the flag reads it.
    assert!(
        args.contains(&"--log-signing-key-file=/etc/audit-guard/log/log.key".to_string()),
        "{args:?}"
    );
    let log_mount = main["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/audit-guard/log")
        .expect("the log key is mounted");
    let log_volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == log_mount["name"])
        .unwrap();
    assert_eq!(log_volume["secret"]["secretName"], "audit-guard-datastorage-log-key");
    assert!(log_volume["secret"].get("optional").is_none(), "no key, no start: nothing unsigned");

    let init = &pod["initContainers"][0];
    let init_args = strings(&init["args"]);
    assert_eq!(&init_args[..2], ["datastorage", "migrate"]);
    assert!(init_args.contains(&"--database-url-file=/etc/audit-guard/db-owner/url".to_string()));
    assert!(init_args.iter().any(|a| a.starts_with("--runtime-role=")));

    for vol in pod["volumes"].as_sequence().unwrap() {
        assert_eq!(vol["secret"]["defaultMode"], 0o400, "{vol:?}");
    }
    let service = &of_kind("Service")[0];
    assert_eq!(service["spec"]["ports"][0]["name"], "https");
}

/// The database Secrets are the admin's (no placeholder password that a re-apply would write
/// over a real one): the base ships none, and the README's commands create exactly the Secrets
/// the pods mount, with URLs that verify the server.
#[test]
fn the_admin_creates_the_database_secrets_as_the_readme_says_and_they_verify_the_server() {
    assert!(of_kind("Secret").is_empty(), "no Secret in the base: {:?}", of_kind("Secret"));
    let pod = &of_kind("Deployment")[0]["spec"]["template"]["spec"];
    let mounted: Vec<String> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|v| ["db", "db-owner"].contains(&v["name"].as_str().unwrap()))
        .map(|v| v["secret"]["secretName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(mounted, ["audit-guard-datastorage-db", "audit-guard-datastorage-db-owner"]);

    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    for name in &mounted {
        let create = format!("kubectl -n audit-guard create secret generic {name} \\");
        let at = lines
            .iter()
            .position(|l| l.trim() == create)
            .unwrap_or_else(|| panic!("README has no `{create}` line"));
        let url = lines[at + 1]
            .trim()
            .strip_prefix("--from-literal=url=\"")
            .and_then(|u| u.strip_suffix('"'))
            .unwrap_or_else(|| panic!("README: `{name}` is created with --from-literal=url=\"...\": {}", lines[at + 1]));
        assert!(url.starts_with("postgres://"), "{url}");
        assert!(
            url.contains("sslmode=verify-full") && url.contains("sslrootcert=/etc/audit-guard/db-ca/ca.crt"),
            "{url}"
        );
    }
    for dir in ["manifests", "charts"] {
        let out = std::process::Command::new("grep")
            .args(["-rl", "change-me", dir])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "a placeholder password in {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn retention_runs_as_the_owner_and_keeps_the_time_window() {
    let jobs = of_kind("CronJob");
    let c = &jobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&c["args"]);
    let months: u32 = args
        .iter()
        .find_map(|a| a.strip_prefix("--retention-months="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(months >= audit_guard::datastorage::postgres::min_retention_months(audit_guard::audit::TIME_WINDOW_PAST));
    assert_eq!(jobs[0]["spec"]["suspend"], true, "retention is opt-in");
}
