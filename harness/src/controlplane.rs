//! A real local Kubernetes control plane for tests and the quickstart: etcd,
//! kube-apiserver (secure serving, RBAC, ServiceAccount signing keys, an admin client
//! certificate, static tokens for test users, and a client certificate it presents to
//! admission webhooks) and kube-controller-manager (garbage collector, namespace and
//! ServiceAccount controllers), built from Go modules by `controlplane/build.sh` and cached
//! outside the repository.
//!
//! The webhook client certificate comes from a CA of its own ([`ControlPlane::webhook_client_ca`]),
//! so a webhook run with `--client-ca-file` on it accepts the API server and nobody else.
//!
//! Every child is started with PR_SET_PDEATHSIG from a thread that lives as long as the
//! process, so that a failing or panicking test run never leaves a process behind.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Static tokens known to the API server: (token, user, uid, groups).
pub const TEST_USERS: &[(&str, &str, &str, &str)] = &[
    ("alice-token", "alice", "1001", "kubernaut:operators"),
    ("breakglass-token", "bob", "1002", "audit-guard:break-glass"),
    (
        "controller-token",
        "system:serviceaccount:audit-guard:audit-guard",
        "1003",
        "system:serviceaccounts",
    ),
];

pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    /// The CA of the client certificate the API server presents to every admission webhook
    /// (its admission configuration names it for `*`): a webhook's `--client-ca-file`.
    pub webhook_client_ca: PathBuf,
    pub etcd_url: String,
    pub options: Options,
    pki: Pki,
    children: Mutex<Vec<(String, Child)>>,
    spawner: mpsc::Sender<SpawnRequest>,
}

/// How the control plane is started. The default is what every test but the node's uses: all
/// on 127.0.0.1, RBAC only, no node.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve a real node (tests/e2e_node.rs): the API server listens and advertises on this
    /// host address (pods reach it through the `kubernetes` Service), authorizes with the Node
    /// authorizer and NodeRestriction, calls kubelets by InternalIP with a client certificate
    /// and checks their serving certificates; the controller manager also runs the controllers
    /// pods need (deployments, replica sets, EndpointSlices, kube-root-ca.crt, node IPAM,
    /// disruption, pod GC).
    pub node_ip: Option<std::net::IpAddr>,
    /// An audit policy file: the API server then writes its audit log (JSON lines) to
    /// [`ControlPlane::audit_log`], e.g. with the policy the project ships for its witness
    /// ([`shipped_audit_policy`]).
    pub audit_policy: Option<PathBuf>,
}

/// The audit policy in manifests/audit/ (SignalProcessing changes at Metadata level).
pub fn shipped_audit_policy() -> PathBuf {
    repo_root().join("manifests/audit/policy.yaml")
}

/// The repository's root, found at run time: cargo sets CARGO_MANIFEST_DIR for what it runs (a
/// test or example of the root package, or the harness's own tests) and scripts run from the
/// root. The path compiled in comes last: cargo reuses this crate's build across checkouts of
/// the same sources, so it may name another checkout, one that no longer exists.
pub fn repo_root() -> PathBuf {
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    runtime
        .into_iter()
        .chain(std::env::current_dir().ok())
        .find_map(|dir| {
            dir.ancestors()
                .find(|d| d.join("controlplane/build.sh").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// The pod network of a control plane started with [`Options::node_ip`] (node IPAM hands the
/// first node 10.244.0.0/24), and the Service network.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The API server's ServiceAccount token issuer, and so the audience its own tokens carry.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The `kubernetes` Service's ClusterIP: the first address of [`SERVICE_CIDR`].
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

pub use crate::ports::free_port;

/// Where `controlplane/build.sh` put the binaries (building them on first use).
pub fn binaries() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("AUDIT_GUARD_CONTROLPLANE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    script_output("controlplane/build.sh", &[], false)
}

/// Runs one of the repository's scripts (a path from the repository's root) and returns the
/// path it prints on stdout; its progress goes to stderr. With `shell_env` the script gets only
/// a shell's variables (PATH, HOME, ...), not this process's: cargo's variables in a test's
/// environment make a nested cargo build rebuild what the same command built from a shell.
pub fn script_output(script: &str, args: &[&str], shell_env: bool) -> Result<PathBuf> {
    let path = repo_root().join(script);
    let mut cmd = Command::new("bash");
    if shell_env {
        cmd.env_clear();
        for var in ["PATH", "HOME", "TMPDIR", "CARGO_TARGET_DIR", "AUDIT_GUARD_CACHE"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
    }
    let out = cmd
        .arg(&path)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} {} failed", args.join(" "));
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A thread that outlives every test: children die with it, i.e. with the process.
fn spawner_thread() -> mpsc::Sender<SpawnRequest> {
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("controlplane-spawner".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
            // Keep the thread (and so the children) alive until the process exits.
            loop {
                std::thread::park();
            }
        })
        .expect("spawn controlplane thread");
    tx
}

struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    ca_pem: String,
}

impl Pki {
    fn new() -> Result<Self> {
        Self::named("audit-guard test control plane CA")
    }

    fn named(name: &str) -> Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        Ok(Self { ca_cert, ca_key, ca_pem })
    }

    fn issue(&self, cn: &str, orgs: &[&str], sans: &[&str], server: bool) -> Result<(String, String)> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        self.issue_owned(cn, orgs, &sans, server)
    }

    fn issue_owned(&self, cn: &str, orgs: &[&str], sans: &[String], server: bool) -> Result<(String, String)> {
        let mut params = rcgen::CertificateParams::new(sans.to_vec())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Removes directories of earlier runs whose process is gone.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("cp-").and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager; waits until the API server is ready.
    pub fn start() -> Result<Self> {
        Self::start_with(Options::default())
    }

    /// As [`ControlPlane::start`], with [`Options`].
    pub fn start_with(options: Options) -> Result<Self> {
        let bin_dir = binaries()?;
        let base = std::env::temp_dir().join("audit-guard-controlplane");
        fs::create_dir_all(&base)?;
        remove_stale_dirs(&base);
        let dir = base.join(format!("cp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;

        let pki = Pki::new()?;
        write(&dir.join("ca.crt"), &pki.ca_pem)?;
        let mut sans: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(ip) = options.node_ip {
            sans.extend([
                ip.to_string(),
                KUBERNETES_SERVICE_IP.into(),
                "kubernetes.default.svc.cluster.local".into(),
            ]);
        }
        let (crt, key) = pki.issue_owned("kube-apiserver", &[], &sans, true)?;
        write(&dir.join("apiserver.crt"), &crt)?;
        write(&dir.join("apiserver.key"), &key)?;
        let (crt, key) = pki.issue("admin", &["system:masters"], &[], false)?;
        write(&dir.join("admin.crt"), &crt)?;
        write(&dir.join("admin.key"), &key)?;
        let sa_key = rcgen::KeyPair::generate()?;
        write(&dir.join("sa.key"), &sa_key.serialize_pem())?;
        write(&dir.join("sa.pub"), &sa_key.public_key_pem())?;
        let tokens: String = TEST_USERS.iter().map(|(t, u, id, g)| format!("{t},{u},{id},\"{g}\"\n")).collect();
        write(&dir.join("tokens.csv"), &tokens)?;
        let webhook_client_ca = write_admission_config(&dir)?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let host = options.node_ip.map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string());
        let server = format!("https://{host}:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        write(&kubeconfig, &admin_kubeconfig(&server, &dir))?;

        let cp = ControlPlane {
            dir: dir.clone(),
            bin_dir: bin_dir.clone(),
            server: server.clone(),
            kubeconfig: kubeconfig.clone(),
            ca_pem: pki.ca_pem.clone(),
            webhook_client_ca,
            etcd_url: etcd_url.clone(),
            options: options.clone(),
            pki,
            children: Mutex::new(Vec::new()),
            spawner: spawner_thread(),
        };

        let mut etcd = Command::new(bin_dir.join("etcd"));
        etcd.args(["--name", "default", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer_port}")])
            .args(["--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", "8589934592"]);
        cp.spawn("etcd", etcd)?;
        cp.start_apiserver(api_port)?;
        cp.wait_ready(Duration::from_secs(90))?;

        let mut kcm = Command::new(bin_dir.join("kube-controller-manager"));
        kcm.arg(format!("--kubeconfig={}", kubeconfig.display()));
        if cp.options.node_ip.is_some() {
            kcm.args([
                "--controllers=garbagecollector,namespace,serviceaccount,deployment,replicaset,endpointslice,endpoint,root-ca-cert-publisher,nodeipam,nodelifecycle,disruption,podgc,job,cronjob",
                "--allocate-node-cidrs=true",
                "--node-cidr-mask-size=24",
            ])
            .arg(format!("--cluster-cidr={CLUSTER_CIDR}"))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg(format!("--root-ca-file={}", dir.join("ca.crt").display()));
        } else {
            kcm.arg("--controllers=garbagecollector,namespace,serviceaccount");
        }
        kcm.arg("--leader-elect=false")
            .args([
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--concurrent-gc-syncs=20",
            ])
            .args(["--kube-api-qps=500", "--kube-api-burst=1000", "-v=1"]);
        cp.spawn("kube-controller-manager", kcm)?;
        // One line per boot, past the test harness's output capture, so that a test run's
        // output tells how many control planes it booted (scripts/test-summary.sh counts them).
        let _ = writeln!(
            std::io::stderr(),
            "control plane booted: kube-apiserver at {} (process {})",
            cp.server,
            std::process::id()
        );
        Ok(cp)
    }

    fn start_apiserver(&self, port: u16) -> Result<()> {
        let d = &self.dir;
        let mut api = Command::new(self.bin_dir.join("kube-apiserver"));
        api.arg(format!("--etcd-servers={}", self.etcd_url))
            .arg(format!("--secure-port={port}"));
        match self.options.node_ip {
            None => {
                api.args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                    .arg("--authorization-mode=RBAC");
            }
            Some(ip) => {
                let (crt, key) = (d.join("apiserver-kubelet-client.crt"), d.join("apiserver-kubelet-client.key"));
                if !crt.exists() {
                    let (c, k) = self.issue_cert("kube-apiserver-kubelet-client", &["system:masters"], &[], false)?;
                    write(&crt, &c)?;
                    write(&key, &k)?;
                }
                api.arg(format!("--bind-address={ip}"))
                    .arg(format!("--advertise-address={ip}"))
                    .args(["--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction"])
                    .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
                    .arg(format!("--kubelet-client-certificate={}", crt.display()))
                    .arg(format!("--kubelet-client-key={}", key.display()))
                    .arg(format!("--kubelet-certificate-authority={}", d.join("ca.crt").display()));
            }
        }
        api.arg(format!("--cert-dir={}", d.join("apiserver-certs").display()))
            .arg(format!("--tls-cert-file={}", d.join("apiserver.crt").display()))
            .arg(format!("--tls-private-key-file={}", d.join("apiserver.key").display()))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .arg(format!("--service-account-key-file={}", d.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", d.join("sa.key").display()))
            .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
            .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
            .arg(format!("--admission-control-config-file={}", d.join(ADMISSION_CONFIG).display()))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .args(["--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000", "-v=1"])
            .args([
                "--enable-priority-and-fairness=false",
                "--storage-media-type=application/vnd.kubernetes.protobuf",
            ]);
        if let Some(policy) = &self.options.audit_policy {
            // One file, never rotated: a restarted API server appends to it.
            api.arg(format!("--audit-policy-file={}", policy.display()))
                .arg(format!("--audit-log-path={}", self.audit_log().display()))
                .args(["--audit-log-format=json", "--audit-log-maxsize=0", "--audit-log-mode=blocking"]);
        }
        self.spawn("kube-apiserver", api)
    }

    /// Where the API server writes its audit log (with [`Options::audit_policy`]).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// A certificate and key signed by this control plane's CA (PEM): a client certificate
    /// for user `cn` in groups `orgs`, or a serving certificate for `sans`.
    pub fn issue_cert(&self, cn: &str, orgs: &[&str], sans: &[&str], server: bool) -> Result<(String, String)> {
        self.pki.issue(cn, orgs, sans, server)
    }

    /// Writes a kubeconfig for a client certificate of user `cn` in groups `orgs`, as
    /// `<dir>/<file>.kubeconfig` (with its certificate and key beside it); returns its path.
    pub fn client_kubeconfig(&self, file: &str, cn: &str, orgs: &[&str]) -> Result<PathBuf> {
        let (crt, key) = self.issue_cert(cn, orgs, &[], false)?;
        let (crt_path, key_path) = (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        write(&crt_path, &crt)?;
        write(&key_path, &key)?;
        let path = self.dir.join(format!("{file}.kubeconfig"));
        write(
            &path,
            &kubeconfig_text(&self.server, &self.dir.join("ca.crt"), &crt_path, &key_path),
        )?;
        Ok(path)
    }

    /// Starts a child whose output goes to `<dir>/<name>.log`.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null());
        let (tx, rx) = mpsc::channel();
        self.spawner.send((cmd, tx)).context("spawner thread gone")?;
        let child = rx
            .recv()
            .context("spawner thread gone")?
            .with_context(|| format!("starting {name}"))?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), child));
        Ok(())
    }

    /// Names and process ids of the running children.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.iter().map(|(n, c)| (n.clone(), c.id())).collect()
    }

    /// Whether the named child was started and has exited.
    pub fn exited(&self, name: &str) -> bool {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.iter_mut().any(|(n, c)| n == name && matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Kills the named child (SIGKILL) and waits for it.
    pub fn kill(&self, name: &str) -> Result<()> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for (n, c) in children.iter_mut().filter(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
            let _ = n;
        }
        children.retain(|(n, _)| n != name);
        Ok(())
    }

    /// Restarts kube-apiserver on the same port (for fault tests).
    pub fn restart_apiserver(&self) -> Result<()> {
        self.kill("kube-apiserver")?;
        let port: u16 = self.server.rsplit(':').next().and_then(|p| p.parse().ok()).context("api port")?;
        self.start_apiserver(port)?;
        self.wait_ready(Duration::from_secs(90))
    }

    pub fn log_tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new(self.bin_dir.join("kubectl"))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .args(["get", "--raw", "/readyz"])
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            if let Some(dead) = self.exited_child() {
                bail!("{dead} exited while starting:\n{}", self.log_tail(&dead));
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver not ready after {timeout:?}:\n{}", self.log_tail("kube-apiserver"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn exited_child(&self) -> Option<String> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children
            .iter_mut()
            .find_map(|(n, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| n.clone()))
    }

    /// Runs kubectl against this control plane; fails with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin_dir.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// A kube client as the admin (system:masters), bound to the caller's runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube client authenticated by one of [`TEST_USERS`]' tokens.
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let mut config = kube::Config::new(self.server.parse()?);
        config.root_cert = Some(vec![pem_to_der(&self.ca_pem)?]);
        config.auth_info.token = Some(token.to_string().into());
        Ok(kube::Client::try_from(config)?)
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let cert = rustls_pemfile::certs(&mut reader).next().context("no certificate in PEM")??;
    Ok(cert.to_vec())
}

const ADMISSION_CONFIG: &str = "admission-config.yaml";

/// The API server's admission configuration: both webhook admission plugins read a kubeconfig
/// whose `*` user is a client certificate, which the API server then presents to every
/// admission webhook it calls. Returns the path of that certificate's CA.
fn write_admission_config(dir: &Path) -> Result<PathBuf> {
    let ca = Pki::named("audit-guard test webhook client CA")?;
    let (crt, key) = ca.issue("kube-apiserver-webhook-client", &[], &[], false)?;
    let ca_path = dir.join("webhook-client-ca.crt");
    write(&ca_path, &ca.ca_pem)?;
    write(&dir.join("webhook-client.crt"), &crt)?;
    write(&dir.join("webhook-client.key"), &key)?;
    let kubeconfig = dir.join("admission-kubeconfig.yaml");
    write(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: \"*\"\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            dir.join("webhook-client.crt").display(),
            dir.join("webhook-client.key").display()
        ),
    )?;
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    write(
        &dir.join(ADMISSION_CONFIG),
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
            plugin("ValidatingAdmissionWebhook"),
            plugin("MutatingAdmissionWebhook")
        ),
    )?;
    Ok(ca_path)
}

fn admin_kubeconfig(server: &str, dir: &Path) -> String {
    kubeconfig_text(server, &dir.join("ca.crt"), &dir.join("admin.crt"), &dir.join("admin.key"))
}

fn kubeconfig_text(server: &str, ca: &Path, crt: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\ncurrent-context: local\n",
        ca = ca.display(),
        crt = crt.display(),
        key = key.display(),
    )
}
