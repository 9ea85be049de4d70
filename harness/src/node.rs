//! A real Kubernetes node beside a [`ControlPlane`] started with [`Options::node_ip`](crate::controlplane::Options::node_ip):
//! containerd (Debian's 1.6) + runc + the CNI bridge, host-local, loopback and portmap
//! plugins, kubelet, kube-scheduler, kube-proxy (iptables mode), kube-router (NetworkPolicy
//! firewall only) and CoreDNS (a Deployment in kube-system). The Kubernetes and add-on
//! binaries and the pause, CoreDNS and probe images are built from Go modules by
//! `controlplane/build.sh node` and cached; no image is pulled from any registry.
//!
//! Daemons are children of the control plane's spawner (killed with the test process); the
//! host state the node changes is put back by [`hoststate::clean`] when the node is dropped,
//! and before it starts (what a killed earlier run left). A lock keeps two nodes from running
//! at once on one machine.
//!
//! Facts this relies on (these VMs): runc needs containerd's `restrict_oom_score_adj` (no
//! CAP_SYS_RESOURCE for oom_score_adj); AppArmor is off; cgroups are v1, so kubelet runs with
//! `failCgroupV1: false` and the cgroupfs driver; pods reach nothing outside the machine (an
//! egress guard drops forwarded traffic leaving the bridge for another interface).

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::controlplane::{script_output, ControlPlane, CLUSTER_CIDR};
use crate::hoststate::{self, BRIDGE, CGROUP_ROOT, LIB_DIR, RUN_DIR};

/// The node's name (and kubelet's hostname override).
pub const NODE_NAME: &str = "agnode";
/// The first node's pod CIDR, as node IPAM allocates it from [`CLUSTER_CIDR`].
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The cluster DNS Service's ClusterIP.
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
/// The sandbox image containerd uses (built here from controlplane/node/pause).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The probe image: `probe sleep` plus checks run through `kubectl exec` (controlplane/node/probe).
pub const PROBE_IMAGE: &str = "localhost/audit-guard-node/probe:1.0";
const COREDNS_REPO: &str = "localhost/audit-guard-node/coredns";

/// Debian packages the node needs (scripts/install-deps.sh installs them).
const HOST_TOOLS: &[&str] = &["containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ipset", "ip"];
const CNI_BIN_DIR: &str = "/usr/lib/cni";
const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

pub struct Node<'a> {
    pub cp: &'a ControlPlane,
    pub ip: IpAddr,
    /// kubelet, kube-proxy, ..., as built by `controlplane/build.sh node`.
    pub bin_dir: PathBuf,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// How long the node took from kubelet's start to Ready.
    pub ready_after: Duration,
    _lock: fs::File,
    stopped: bool,
}

/// The host's address on its default route: where pods reach the API server and host services.
pub fn host_ip() -> Result<IpAddr> {
    let out = Command::new("ip").args(["-4", "route", "show", "default"]).output()?;
    let route = String::from_utf8_lossy(&out.stdout);
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .context("no default route: the node needs a host address that pods can reach")?
        .to_string();
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &dev]).output()?;
    let addr = String::from_utf8_lossy(&out.stdout);
    let cidr = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .with_context(|| format!("no IPv4 address on {dev}"))?;
    Ok(cidr.split('/').next().unwrap_or(cidr).parse()?)
}

/// Where `controlplane/build.sh node` put the node's binaries (building them on first use);
/// the images are in `../images`.
pub fn binaries() -> Result<PathBuf> {
    script_output("controlplane/build.sh", &["node"], false)
}

/// The audit-guard image's OCI archive, as `make image` (scripts/image.sh) builds it: at once
/// when `make image` has run for this source.
pub fn audit_guard_image() -> Result<PathBuf> {
    script_output("scripts/image.sh", &[], true)
}

fn preflight() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the node needs root (containerd, kubelet, iptables)");
    }
    let mut missing: Vec<String> = HOST_TOOLS
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .map(|t| t.to_string())
        .collect();
    missing.extend(
        CNI_PLUGINS
            .iter()
            .filter(|p| !Path::new(CNI_BIN_DIR).join(p).exists())
            .map(|p| format!("{CNI_BIN_DIR}/{p}")),
    );
    if !missing.is_empty() {
        bail!("missing on this host: {} (run scripts/install-deps.sh as root)", missing.join(", "));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl<'a> Node<'a> {
    /// Starts the node and CoreDNS; returns when the node is Ready and cluster DNS serves.
    pub fn start(cp: &'a ControlPlane) -> Result<Self> {
        let Some(ip) = cp.options.node_ip else {
            bail!("the control plane was not started for a node (Options::node_ip)");
        };
        preflight()?;
        let bin_dir = binaries()?;
        let lock = hoststate::lock(true)?;
        let found = hoststate::clean().context("removing what an earlier node left")?;
        if !found.is_empty() {
            eprintln!(">> node: removed what an earlier run left: {}", found.join(", "));
        }
        hoststate::save()?;
        let lib = Path::new(LIB_DIR);
        let run_dir = Path::new(RUN_DIR);
        fs::create_dir_all(lib)?;
        fs::set_permissions(lib, fs::Permissions::from_mode(0o755))?;
        fs::create_dir_all(run_dir)?;
        let mut node = Node {
            cp,
            ip,
            bin_dir,
            containerd_socket: run_dir.join("containerd/containerd.sock"),
            ready_after: Duration::ZERO,
            _lock: lock,
            stopped: false,
        };
        node.start_daemons().inspect_err(|_| node.stop())?;
        Ok(node)
    }

    fn images_dir(&self) -> PathBuf {
        self.bin_dir.with_file_name("images")
    }

    fn start_daemons(&mut self) -> Result<()> {
        let started = Instant::now();
        let lib = Path::new(LIB_DIR);
        let config = lib.join("config");
        let cp = self.cp;

        // Forwarding for the bridge (the bridge plugin would turn it on anyway; put back at the end).
        hoststate::set_sysctl("net/ipv4/ip_forward", "1")?;
        hoststate::set_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        self.egress_guard()?;
        self.make_cgroup_root()?;

        // containerd + runc + CNI.
        write(&config.join("containerd.toml"), &containerd_config(&self.containerd_socket))?;
        write(&lib.join("cni/net.d/10-agnode.conflist"), &cni_config())?;
        let mut containerd = Command::new("containerd");
        containerd.arg("--config").arg(config.join("containerd.toml"));
        // No registry is ever contacted: every image is imported, and a pull (an image missing
        // or misnamed) fails at once against a closed local port instead of going out.
        for var in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            containerd.env(var, "http://127.0.0.1:9");
        }
        containerd.env_remove("NO_PROXY").env_remove("no_proxy");
        cp.spawn("containerd", containerd)?;
        wait_until("containerd", Duration::from_secs(30), || Ok(self.ctr(&["version"]).is_ok()))?;
        let images = self.images_dir();
        self.import_image(&images.join("pause.oci.tar"), PAUSE_IMAGE)?;
        self.import_image(&images.join("probe.oci.tar"), PROBE_IMAGE)?;
        let coredns_tar = images.join("coredns.oci.tar");
        self.import_image(&coredns_tar, &format!("{COREDNS_REPO}:{}", oci_archive_tag(&coredns_tar)?))?;

        // kubelet, with certificates from the control plane's CA.
        let kubelet_kubeconfig = cp.client_kubeconfig("kubelet", &format!("system:node:{NODE_NAME}"), &["system:nodes"])?;
        let (crt, key) = cp.issue_cert(
            &format!("system:node:{NODE_NAME}"),
            &["system:nodes"],
            &[&self.ip.to_string(), NODE_NAME],
            true,
        )?;
        write(&config.join("kubelet.crt"), &crt)?;
        write(&config.join("kubelet.key"), &key)?;
        write(
            &config.join("resolv.conf"),
            "# The test node's pods resolve cluster names only (no upstream resolver).\n",
        )?;
        let kubelet_port = crate::ports::free_port()?;
        write(
            &config.join("kubelet.yaml"),
            &kubelet_config(self.ip, kubelet_port, &config, &cp.dir.join("ca.crt"), &self.containerd_socket),
        )?;
        let mut kubelet = Command::new(self.bin_dir.join("kubelet"));
        kubelet
            .arg(format!("--config={}", config.join("kubelet.yaml").display()))
            .arg(format!("--kubeconfig={}", kubelet_kubeconfig.display()))
            .arg(format!("--root-dir={}", lib.join("kubelet").display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={}", self.ip))
            .arg("--v=1");
        let kubelet_started = Instant::now();
        cp.spawn("kubelet", kubelet)?;

        // kube-scheduler and kube-proxy on their own identities; kube-router as the admin.
        let scheduler_kubeconfig = cp.client_kubeconfig("kube-scheduler", "system:kube-scheduler", &[])?;
        let mut scheduler = Command::new(self.bin_dir.join("kube-scheduler"));
        scheduler.arg(format!("--kubeconfig={}", scheduler_kubeconfig.display())).args([
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]);
        cp.spawn("kube-scheduler", scheduler)?;
        let proxy_kubeconfig = cp.client_kubeconfig("kube-proxy", "system:kube-proxy", &[])?;
        write(&config.join("kube-proxy.yaml"), &kube_proxy_config(self.ip, &proxy_kubeconfig)?)?;
        let mut proxy = Command::new(self.bin_dir.join("kube-proxy"));
        proxy
            .arg(format!("--config={}", config.join("kube-proxy.yaml").display()))
            .arg("--v=1");
        cp.spawn("kube-proxy", proxy)?;

        self.wait_node_ready()?;
        self.ready_after = kubelet_started.elapsed();
        eprintln!(
            ">> node: {NODE_NAME} Ready {:.1}s after kubelet started",
            self.ready_after.as_secs_f64()
        );
        let mut router = Command::new(self.bin_dir.join("kube-router"));
        router
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .args(["--run-firewall=true", "--run-router=false", "--run-service-proxy=false"])
            .args([
                "--enable-cni=false",
                "--enable-ipv6=false",
                "--enable-pod-egress=false",
                "--metrics-port=0",
            ])
            .arg(format!("--service-cluster-ip-range={}", crate::controlplane::SERVICE_CIDR))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg("--health-port=0")
            .arg("--v=1");
        cp.spawn("kube-router", router)?;

        self.start_coredns()?;
        eprintln!(">> node: started in {:.1}s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Forwarded traffic from the pod bridge to any other interface is dropped: pods reach the
    /// host and each other, nothing off the machine. In the mangle table, ahead of the filter
    /// rules kube-proxy and kube-router insert.
    fn egress_guard(&self) -> Result<()> {
        run(Command::new("iptables").args(["-t", "mangle", "-N", "AGNODE-EGRESS"]))?;
        run(Command::new("iptables").args([
            "-t",
            "mangle",
            "-A",
            "AGNODE-EGRESS",
            "-i",
            BRIDGE,
            "!",
            "-o",
            BRIDGE,
            "-m",
            "comment",
            "--comment",
            "audit-guard test node: pods reach nothing off this machine",
            "-j",
            "DROP",
        ]))?;
        run(Command::new("iptables").args(["-t", "mangle", "-I", "FORWARD", "-j", "AGNODE-EGRESS"]))?;
        Ok(())
    }

    /// kubelet's cgroupRoot must exist in every hierarchy; cpuset needs its cpus and mems.
    fn make_cgroup_root(&self) -> Result<()> {
        let base = Path::new("/sys/fs/cgroup");
        let unified = base.join("cgroup.controllers").exists();
        let hierarchies: Vec<PathBuf> = if unified {
            vec![base.to_path_buf()]
        } else {
            fs::read_dir(base)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        };
        for h in hierarchies {
            let dir = h.join(CGROUP_ROOT);
            fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(h.join(f)) {
                    fs::write(dir.join(f), v.trim()).with_context(|| format!("{}/{f}", dir.display()))?;
                }
            }
        }
        Ok(())
    }

    /// Runs ctr against the node's containerd (namespace k8s.io).
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["--namespace", "k8s.io"])
            .args(args))
    }

    /// Imports an OCI archive into containerd's `k8s.io` namespace as `reference` (the archive's
    /// tag must be the reference's).
    pub fn import_image(&self, archive: &Path, reference: &str) -> Result<()> {
        let (repo, tag) = reference
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .with_context(|| format!("{reference}: no tag"))?;
        let archive_tag = oci_archive_tag(archive)?;
        if archive_tag != tag {
            bail!("{} is tagged {archive_tag}, not {tag}", archive.display());
        }
        let archive = archive.to_str().context("archive path")?;
        self.ctr(&["images", "import", "--base-name", repo, archive])?;
        let listed = self.ctr(&["images", "ls", "-q"])?;
        if !listed.lines().any(|l| l == reference) {
            bail!("{reference} not in containerd after import:\n{listed}");
        }
        Ok(())
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.cp.kubectl(args)
    }

    fn wait_node_ready(&self) -> Result<()> {
        wait_until("the node to register and be Ready", Duration::from_secs(120), || {
            let ready = self
                .kubectl(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .unwrap_or_default();
            if let Some(dead) = self.dead_daemon() {
                bail!("{dead} exited:\n{}", self.cp.log_tail(&dead));
            }
            Ok(ready == "True")
        })
        .map_err(|e| anyhow::anyhow!("{e:#}\nkubelet log:\n{}", self.cp.log_tail("kubelet")))?;
        let cidr = self.kubectl(&["get", "node", NODE_NAME, "-o", "jsonpath={.spec.podCIDR}"])?;
        if cidr != POD_CIDR {
            bail!("node IPAM gave the node {cidr:?}, the CNI configuration uses {POD_CIDR}");
        }
        Ok(())
    }

    /// A node daemon that has exited, if any.
    pub fn dead_daemon(&self) -> Option<String> {
        [
            "containerd",
            "kubelet",
            "kube-scheduler",
            "kube-proxy",
            "kube-router",
            "node-postgres",
        ]
        .into_iter()
        .find(|d| self.cp.exited(d))
        .map(String::from)
    }

    fn start_coredns(&self) -> Result<()> {
        let tag = oci_archive_tag(&self.images_dir().join("coredns.oci.tar"))?;
        let file = self.cp.dir.join("coredns.yaml");
        write(&file, &coredns_manifest(&format!("{COREDNS_REPO}:{tag}")))?;
        self.kubectl(&["apply", "-f", file.to_str().context("path")?])?;
        self.kubectl(&["rollout", "status", "-n", "kube-system", "deployment/coredns", "--timeout=120s"])
            .map_err(|e| anyhow::anyhow!("{e:#}\nkubelet log:\n{}", self.cp.log_tail("kubelet")))?;
        Ok(())
    }

    /// Stops every daemon and pod and puts the host back as it was. Also run on drop.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let started = Instant::now();
        // kubelet first, so that nothing restarts a container; then pods, shims and the rest
        // (hoststate::clean kills what names the node's directories or runs in its cgroups).
        for daemon in [
            "kubelet",
            "kube-scheduler",
            "kube-router",
            "kube-proxy",
            "containerd",
            "node-postgres",
        ] {
            let _ = self.cp.kill(daemon);
        }
        match hoststate::clean() {
            Ok(_) => eprintln!(">> node: stopped and cleaned up in {:.1}s", started.elapsed().as_secs_f64()),
            Err(e) => eprintln!(">> node: cleaning up failed: {e:#} (run `make node-clean` as root)"),
        }
    }
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tag of the (single) image in an OCI archive (`org.opencontainers.image.ref.name`).
pub fn oci_archive_tag(archive: &Path) -> Result<String> {
    let out = run(Command::new("tar").arg("-xOf").arg(archive).arg("./index.json"))?;
    let marker = "\"org.opencontainers.image.ref.name\":\"";
    let start = out
        .find(marker)
        .with_context(|| format!("{}: no ref.name in index.json", archive.display()))?
        + marker.len();
    let end = out[start..].find('"').context("unterminated ref.name")?;
    Ok(out[start..start + end].to_string())
}

fn containerd_config(socket: &Path) -> String {
    format!(
        r#"# The test node's containerd (tests/e2e_node.rs): its own root, state and socket.
version = 2
root = "{LIB_DIR}/containerd"
state = "{RUN_DIR}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # These VMs deny CAP_SYS_RESOURCE on /proc/self/oom_score_adj: without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{LIB_DIR}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{RUN_DIR}/runc"
"#,
        socket = socket.display()
    )
}

fn cni_config() -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "agnode",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{POD_CIDR}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}],
        "dataDir": "{LIB_DIR}/cni/ipam"
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#
    )
}

fn kubelet_config(ip: IpAddr, port: u16, config: &Path, ca: &Path, socket: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{ip}"
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization:
  mode: Webhook
tlsCertFile: "{config}/kubelet.crt"
tlsPrivateKeyFile: "{config}/kubelet.key"
containerRuntimeEndpoint: "unix://{socket}"
cgroupDriver: cgroupfs
cgroupRoot: "/{CGROUP_ROOT}"
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
enforceNodeAllocatable: []
resolvConf: "{config}/resolv.conf"
clusterDNS: ["{CLUSTER_DNS_IP}"]
clusterDomain: cluster.local
podLogsDir: "{LIB_DIR}/pod-logs"
volumePluginDir: "{LIB_DIR}/volume-plugins"
staticPodPath: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
maxPods: 110
"#,
        ca = ca.display(),
        config = config.display(),
        socket = socket.display(),
    )
}

fn kube_proxy_config(ip: IpAddr, kubeconfig: &Path) -> Result<String> {
    Ok(format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: "{kubeconfig}"
mode: iptables
clusterCIDR: "{CLUSTER_CIDR}"
hostnameOverride: "{NODE_NAME}"
bindAddress: "{ip}"
healthzBindAddress: "127.0.0.1:{health}"
metricsBindAddress: "127.0.0.1:{metrics}"
# NodePorts on the node address only: no route_localnet for localhost NodePorts.
nodePortAddresses: ["{ip}/32"]
# Leave the host's conntrack settings as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  syncPeriod: 10s
  minSyncPeriod: 0s
"#,
        kubeconfig = kubeconfig.display(),
        health = crate::ports::free_port()?,
        metrics = crate::ports::free_port()?,
    ))
}

fn coredns_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {{type: RuntimeDefault}}
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: 1053, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {CLUSTER_DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"#
    )
}

/// A PostgreSQL server of the node's own (Debian's binaries, run as the `postgres` user, data
/// below the node's directory), listening on the host address with TLS: pods reach it through a
/// Service without selector. The machine's shared PostgreSQL is left alone: changing its
/// listen_addresses needs a restart that other tests would see.
pub struct NodePostgres {
    pub ip: IpAddr,
    pub port: u16,
    bin: PathBuf,
    socket_dir: PathBuf,
}

fn postgres_ids() -> Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres")?;
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("no postgres user (apt-get install postgresql)");
    }
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn postgres_bin() -> Result<PathBuf> {
    let mut versions: Vec<u32> = fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|v| v.parse().ok()))
        .collect();
    versions.sort_unstable();
    let v = versions.last().context("no PostgreSQL version in /usr/lib/postgresql")?;
    Ok(PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
}

impl Node<'_> {
    /// Starts the node's PostgreSQL: TLS with a certificate for `server_names` from the control
    /// plane's CA; pods (the cluster CIDR) may log in with a password over TLS only.
    pub fn start_postgres(&self, server_names: &[&str]) -> Result<NodePostgres> {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_ids()?;
        let bin = postgres_bin()?;
        let home = Path::new(LIB_DIR).join("postgres");
        let data = home.join("data");
        fs::create_dir_all(&home)?;
        std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700))?;
        run(Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=reject", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"])
            .current_dir("/")
            .uid(uid)
            .gid(gid))?;
        let (crt, key) = self.cp.issue_cert("postgresql", &[], server_names, true)?;
        for (file, text) in [("server.crt", crt), ("server.key", key)] {
            let path = data.join(file);
            write(&path, &text)?;
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
        write(
            &data.join("pg_hba.conf"),
            &format!("local all postgres trust\nhostssl all all {CLUSTER_CIDR} scram-sha-256\n"),
        )?;
        let port = crate::ports::free_port()?;
        let mut pg = Command::new(bin.join("postgres"));
        pg.arg("-D")
            .arg(&data)
            .arg("-c")
            .arg(format!("listen_addresses={}", self.ip))
            .arg("-c")
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", home.display()))
            .args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "password_encryption=scram-sha-256"])
            .current_dir("/")
            .uid(uid)
            .gid(gid);
        self.cp.spawn("node-postgres", pg)?;
        let pg = NodePostgres {
            ip: self.ip,
            port,
            bin,
            socket_dir: home,
        };
        wait_until("the node's PostgreSQL", Duration::from_secs(60), || {
            if self.cp.exited("node-postgres") {
                bail!("PostgreSQL exited:\n{}", self.cp.log_tail("node-postgres"));
            }
            Ok(pg.psql("postgres", "select 1").is_ok())
        })?;
        Ok(pg)
    }
}

impl NodePostgres {
    /// Runs SQL as the superuser over the Unix socket; returns psql's unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        run(Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql]))
    }

    /// Makes sure `user` logs in with `password` and owns `database`.
    pub fn ensure_login(&self, user: &str, password: &str, database: &str) -> Result<()> {
        let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let exists = self.psql("postgres", &format!("select 1 from pg_roles where rolname = {}", literal(user)))?;
        let verb = if exists.trim() == "1" { "alter" } else { "create" };
        self.psql(
            "postgres",
            &format!("{verb} role {} login password {}", ident(user), literal(password)),
        )?;
        let exists = self.psql(
            "postgres",
            &format!("select 1 from pg_database where datname = {}", literal(database)),
        )?;
        if exists.trim() != "1" {
            self.psql("postgres", &format!("create database {} owner {}", ident(database), ident(user)))?;
        }
        Ok(())
    }
}
