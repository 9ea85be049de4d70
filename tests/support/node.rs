//! The shipped manifests installed on a real node (tests/e2e_node.rs): rendering them as `make
//! certs` + `kubectl apply -k` would, the named overrides a scenario needs until other work
//! lands, the database Secrets the admin creates and the host PostgreSQL they name, and reading
//! from the pods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use audit_guard_harness::controlplane::{ControlPlane, SERVICE_ACCOUNT_ISSUER};
use audit_guard_harness::node::{Node, NodePostgres};
use serde_json::{json, Value};

pub const NAMESPACE: &str = "audit-guard";
pub const OVERLAY: &str = "manifests/overlays/self-managed";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A change to the rendered manifests that the test makes on purpose, printed when used.
pub struct Override {
    pub name: &'static str,
    pub why: String,
    pub apply: fn(&mut [Value]),
}

/// Parses a multi-document YAML stream into one JSON value per object.
pub fn parse_docs(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The rendered overlay, one JSON value per object.
pub fn render(cp: &ControlPlane) -> Result<Vec<Value>> {
    // make certs: the development CA and serving certificate into the overlay's generated/
    // (with the binary under test, rather than building one).
    let out = Command::new("bash")
        .arg(repo().join("scripts/certs.sh"))
        .env("AUDIT_GUARD_BIN", super::datastorage::binary())
        .output()?;
    if !out.status.success() {
        bail!("make certs: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_docs(&cp.kubectl(&["kustomize", repo().join(OVERLAY).to_str().context("path")?])?)
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

pub fn find_mut<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> Option<&'a mut Value> {
    docs.iter_mut().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// The webhook Deployment's projected token for Data Storage: (volume index, audience).
fn datastorage_token_audience(docs: &[Value]) -> Option<String> {
    let deploy = find(docs, "Deployment", "audit-guard")?;
    deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v["projected"]["sources"].as_array())
        .flatten()
        .find_map(|s| s["serviceAccountToken"]["audience"].as_str().map(String::from))
}

/// Until Data Storage's TokenReview names an audience (`--token-audience`), the API
/// server checks tokens against its own audience and refuses one projected for another: every
/// write would get 401 and every deletion wait forever. True while that is so.
pub fn audience_override_needed() -> Result<bool> {
    let help = Command::new(super::datastorage::binary())
        .args(["datastorage", "--help"])
        .output()?;
    Ok(!String::from_utf8_lossy(&help.stdout).contains("--token-audience"))
}

/// The overrides this run needs, decided from what the manifests and the binary say.
pub fn overrides(docs: &[Value]) -> Result<Vec<Override>> {
    let mut list = Vec::new();
    let audience = datastorage_token_audience(docs).context("no projected token for Data Storage")?;
    if audience_override_needed()? && audience != SERVICE_ACCOUNT_ISSUER {
        list.push(Override {
            name: "datastorage-token-audience-until-issue-11",
            why: format!(
                "datastorage has no --token-audience: its TokenReview refuses tokens for audience \
                 {audience:?}; the webhook Deployment's projected token gets the API server's \
                 audience {SERVICE_ACCOUNT_ISSUER:?} instead"
            ),
            apply: |docs| {
                let volumes = find_mut(docs, "Deployment", "audit-guard")
                    .and_then(|d| d.pointer_mut("/spec/template/spec/volumes"))
                    .and_then(Value::as_array_mut);
                for v in volumes.into_iter().flatten() {
                    let sources = v.pointer_mut("/projected/sources").and_then(Value::as_array_mut);
                    for s in sources.into_iter().flatten() {
                        if let Some(token) = s.get_mut("serviceAccountToken") {
                            token["audience"] = json!(SERVICE_ACCOUNT_ISSUER);
                        }
                    }
                }
            },
        });
    }
    Ok(list)
}

/// The audience Data Storage accepts tokens for, once the overrides are applied.
pub fn accepted_audience(docs: &[Value]) -> Result<String> {
    datastorage_token_audience(docs).context("no projected token for Data Storage")
}

/// Starts the node's PostgreSQL for the URLs the manifests name: their roles, passwords and
/// databases, and a TLS certificate for their host names.
pub fn database_for(node: &Node, urls: &[reqwest::Url]) -> Result<NodePostgres> {
    if urls.is_empty() {
        bail!("the rendered manifests name no PostgreSQL URL");
    }
    let hosts: Vec<String> = urls.iter().filter_map(|u| u.host_str().map(String::from)).collect();
    let mut names: Vec<String> = hosts.clone();
    names.extend(hosts.iter().map(|h| format!("{h}.cluster.local")));
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let pg = node.start_postgres(&names_ref)?;
    for url in urls {
        let user = url.username();
        let password = url.password().context("database URL without a password")?;
        let db = url.path().trim_start_matches('/');
        let decode = |s: &str| percent_decode(s).with_context(|| format!("percent-decoding {s}"));
        pg.ensure_login(&decode(user)?, &decode(password)?, &decode(db)?)?;
    }
    Ok(pg)
}

/// For each `<svc>.<ns>.svc` host the URLs name, a Service without selector whose EndpointSlice
/// points at the node's PostgreSQL (the Secrets and keys are the admin's, made as the README says).
pub fn database_services(cp: &ControlPlane, urls: &[reqwest::Url], pg: &NodePostgres) -> Result<()> {
    let mut objects = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for url in urls {
        let host = url.host_str().unwrap_or_default();
        let port = url.port().unwrap_or(5432);
        let mut parts = host.split('.');
        let (Some(svc), Some(ns), Some("svc")) = (parts.next(), parts.next(), parts.next()) else {
            bail!("database host {host:?} is not a <service>.<namespace>.svc name");
        };
        if !seen.insert((svc.to_string(), ns.to_string())) {
            continue;
        }
        objects.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec:\n  ports: [{{name: postgresql, port: {port}, protocol: TCP}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-host\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {svc}, endpointslice.kubernetes.io/managed-by: audit-guard-e2e-node}}\n\
             addressType: IPv4\nports: [{{name: postgresql, port: {}, protocol: TCP}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n---\n",
            pg.port, pg.ip
        ));
    }
    let file = cp.dir.join("postgresql-service.yaml");
    std::fs::write(&file, objects)?;
    cp.kubectl(&["apply", "-f", file.to_str().context("path")?])?;
    Ok(())
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("truncated escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

pub fn to_yaml(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d)?);
    }
    Ok(out)
}

/// `kubectl get -o json` as a value.
pub fn get_json(cp: &ControlPlane, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&cp.kubectl(&all)?)?)
}

/// Names of the pods in `ns` with label app.kubernetes.io/name=`app`, not being deleted.
pub fn pods_of(cp: &ControlPlane, ns: &str, app: &str) -> Result<Vec<Value>> {
    let list = get_json(cp, &["get", "pods", "-n", ns, "-l", &format!("app.kubernetes.io/name={app}")])?;
    Ok(list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect())
}

pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

pub fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// A Prometheus text exposition, summed by metric name and the label filter given.
pub fn metric(text: &str, name: &str, label_filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && label_filter.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A pod's metrics, through the API server's pod proxy.
pub fn pod_metrics(cp: &ControlPlane, ns: &str, pod: &str, port: u16) -> Result<String> {
    cp.kubectl(&["get", "--raw", &format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/metrics")])
}

/// The containerd tasks of a pod's container: (container id, pid), from the node's containerd.
pub fn container_pid(node: &Node, pod: &str, container: &str) -> Result<u32> {
    let containers = node.ctr(&["containers", "ls", "-q"])?;
    for id in containers.lines() {
        // A container removed since the listing (a pod of an install being torn down) is not
        // the running one sought.
        let Ok(info) = node.ctr(&["containers", "info", id]) else {
            continue;
        };
        let info: Value = serde_json::from_str(&info)?;
        let labels = &info["Labels"];
        if labels["io.kubernetes.pod.name"] == pod && labels["io.kubernetes.container.name"] == container {
            let tasks = node.ctr(&["tasks", "ls"])?;
            for line in tasks.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.first() == Some(&id) && cols.get(2) == Some(&"RUNNING") {
                    return Ok(cols[1].parse()?);
                }
            }
        }
    }
    bail!("no running container {container} of pod {pod} in containerd")
}

/// A probe pod (controlplane/node/probe) in `ns`, Ready to take `kubectl exec` checks.
pub fn probe_pod(cp: &ControlPlane, ns: &str, name: &str, labels: &BTreeMap<&str, &str>) -> Result<()> {
    let labels: String = labels.iter().map(|(k, v)| format!("{k}: {v}, ")).collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}\n  \
         containers:\n  - name: probe\n    image: {}\n    imagePullPolicy: Never\n    args: [sleep]\n    \
         securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}\n",
        audit_guard_harness::node::PROBE_IMAGE
    );
    let file = cp.dir.join(format!("probe-{ns}-{name}.yaml"));
    std::fs::write(&file, manifest)?;
    cp.kubectl(&["apply", "-f", file.to_str().context("path")?])?;
    cp.kubectl(&["wait", "-n", ns, "--for=condition=Ready", &format!("pod/{name}"), "--timeout=120s"])?;
    Ok(())
}

/// Runs `probe <args>` in a probe pod; (exit success, output).
pub fn probe(cp: &ControlPlane, ns: &str, pod: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["exec", "-n", ns, pod, "--", "probe"];
    all.extend(args);
    match cp.kubectl(&all) {
        Ok(out) => (true, out.trim().to_string()),
        Err(e) => (false, format!("{e:#}").trim().to_string()),
    }
}

/// A ClusterIP Service's address and port, by `<svc>.<ns>.svc[:port]` URL.
pub fn service_address(cp: &ControlPlane, url: &reqwest::Url) -> Result<std::net::SocketAddr> {
    let host = url.host_str().context("URL without host")?;
    let mut parts = host.split('.');
    let (Some(svc), Some(ns)) = (parts.next(), parts.next()) else {
        bail!("{host} is not a Service name");
    };
    let ip = cp.kubectl(&["get", "service", svc, "-n", ns, "-o", "jsonpath={.spec.clusterIP}"])?;
    let port = url.port_or_known_default().context("no port")?;
    Ok(format!("{ip}:{port}").parse()?)
}

/// How the test reads Data Storage: through its Service's ClusterIP (kube-proxy on this node),
/// with a token of a ServiceAccount from the TokenRequest API for the accepted audience.
pub struct DataStorageReader {
    pub base: reqwest::Url,
    http: reqwest::Client,
    token: String,
}

impl DataStorageReader {
    pub fn new(cp: &ControlPlane, docs: &[Value], token: String) -> Result<Self> {
        let deploy = find(docs, "Deployment", "audit-guard").context("no audit-guard Deployment")?;
        let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let url = env
            .iter()
            .find(|e| e["name"] == "DATASTORAGE_URL")
            .and_then(|e| e["value"].as_str())
            .context("the Deployment sets no DATASTORAGE_URL")?;
        let base = reqwest::Url::parse(url)?;
        let addr = service_address(cp, &base)?;
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .resolve(base.host_str().context("host")?, addr);
        if base.scheme() == "https" {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&datastorage_ca(cp, &env)?)?);
        }
        Ok(Self {
            base,
            http: http.build()?,
            token,
        })
    }

    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Value)> {
        let url = self.base.join(path_and_query)?;
        let resp = self.http.get(url).bearer_auth(&self.token).send().await?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The stored record of `id`, if any.
    pub async fn record(&self, id: &str) -> Result<Option<Value>> {
        match self.get(&format!("/api/v1/audit/signal-processing/{id}")).await? {
            (200, v) => Ok(Some(v)),
            (404, _) => Ok(None),
            (s, v) => bail!("GET record {id}: {s} {v}"),
        }
    }

    /// Every record with this remediation_id (all pages).
    pub async fn records_of(&self, remediation_id: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/api/v1/audit/signal-processing?remediation_id={remediation_id}&limit=500");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&q).await?;
            if status != 200 {
                bail!("list: {status} {page}");
            }
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }
}

/// The CA the webhook Deployment gives its Data Storage client (DATASTORAGE_CA_FILE), read from
/// the Secret or ConfigMap mounted there.
fn datastorage_ca(cp: &ControlPlane, env: &[Value]) -> Result<Vec<u8>> {
    let path = env
        .iter()
        .find(|e| e["name"] == "DATASTORAGE_CA_FILE")
        .and_then(|e| e["value"].as_str())
        .context("https Data Storage without DATASTORAGE_CA_FILE")?;
    let deploy = get_json(cp, &["get", "deployment", "audit-guard", "-n", NAMESPACE])?;
    let spec = &deploy["spec"]["template"]["spec"];
    let mounts = spec["containers"][0]["volumeMounts"].as_array().cloned().unwrap_or_default();
    for m in mounts {
        let dir = m["mountPath"].as_str().unwrap_or_default();
        let Some(file) = Path::new(path).strip_prefix(dir).ok().and_then(|f| f.to_str()) else {
            continue;
        };
        let volume = spec["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]))
            .context("volume of the CA mount")?;
        let (kind, name) = if let Some(s) = volume["secret"]["secretName"].as_str() {
            ("secret", s)
        } else if let Some(c) = volume["configMap"]["name"].as_str() {
            ("configmap", c)
        } else {
            bail!("the CA volume is neither a Secret nor a ConfigMap");
        };
        let obj = get_json(cp, &["get", kind, name, "-n", NAMESPACE])?;
        let value = obj["data"][file].as_str().context("CA key")?;
        return Ok(if kind == "secret" {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(value)?
        } else {
            value.as_bytes().to_vec()
        });
    }
    bail!("no volume mounted at {path}")
}

/// What the kernel says about a container's process: its uids (real, effective, saved, fs)
/// and whether its root filesystem is mounted read-only.
pub fn process_evidence(pid: u32) -> Result<(String, bool)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .context("no Uid line")?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let root_ro = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f.get(5).map(|o| o.split(',').any(|o| o == "ro")))
        .context("no root mount")?;
    Ok((uid, root_ro))
}
