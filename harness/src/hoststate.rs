//! The host state a test node changes, and how it is put back: processes, mounts, the CNI
//! bridge, iptables chains, ipsets, cgroups, sysctls and the directories that kubelet,
//! containerd and the CNI plugins create outside any directory they are given.
//!
//! [`clean`] is idempotent: [`crate::node::Node`] runs it before starting (to remove what a
//! killed earlier run left) and after stopping. It touches only what the node owns: processes
//! whose command line names the node's directories or run in its cgroup, mounts below its
//! directories, the bridge it names, iptables chains and ipsets by the prefixes kube-proxy,
//! kube-router, the CNI plugins and the node harness use, and host paths recorded as absent
//! before the node started.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Everything of the node's that lives in a directory of its own.
pub const LIB_DIR: &str = "/var/lib/audit-guard-node";
/// The node's runtime state (containerd state and sockets, network namespaces).
pub const RUN_DIR: &str = "/run/audit-guard-node";
/// Held (flock) while a node runs: two node harnesses never run at once.
pub const LOCK_FILE: &str = "/run/audit-guard-node.lock";
/// What the node found on the host before it started (sysctls, absent paths), to put back.
pub const SAVED_STATE: &str = "/run/audit-guard-node.saved";
/// kubelet's cgroupRoot: every pod process lives below it in each cgroup hierarchy.
pub const CGROUP_ROOT: &str = "audit-guard-node";
/// The CNI bridge.
pub const BRIDGE: &str = "agnode0";
/// Chains of kube-proxy and kube-router (KUBE-), the CNI bridge and portmap plugins (CNI-),
/// and the harness's own egress guard (AGNODE-).
const CHAIN_PREFIXES: &[&str] = &["KUBE-", "CNI-", "AGNODE-"];
/// kube-router's ipsets.
const IPSET_PREFIXES: &[&str] = &["KUBE-", "kube-router", "inet6:KUBE-"];
/// Sysctls the node changes: the bridge plugin turns on forwarding; kubelet sets its kernel
/// tunables (protectKernelDefaults: false); kube-proxy may turn on route_localnet.
const SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// Paths kubelet, containerd (shim sockets), the CNI plugins or kube-router create outside the
/// directories they are given; removed at the end if they did not exist before.
const HOST_PATHS: &[&str] = &[
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/kubelet",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/usr/libexec/kubernetes",
    "/var/lib/kube-router",
    "/etc/kubernetes",
];

/// Takes the machine-wide node lock: waits for another node harness to finish, or (`wait`
/// false) fails at once when one runs. Held until the file is dropped.
pub fn lock(wait: bool) -> Result<fs::File> {
    use std::os::unix::io::AsRawFd;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if !wait {
            bail!("a node harness is running (it holds {LOCK_FILE})");
        }
        eprintln!(">> node: another node harness holds {LOCK_FILE}; waiting for it");
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("flock {LOCK_FILE}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Records what [`clean`] must put back. Call after [`clean`], before the node starts.
pub fn save() -> Result<()> {
    let mut text = String::new();
    for key in SYSCTLS {
        if let Ok(v) = fs::read_to_string(Path::new("/proc/sys").join(key)) {
            text.push_str(&format!("sysctl {key} {}\n", v.trim()));
        }
    }
    for path in HOST_PATHS {
        if !Path::new(path).exists() {
            text.push_str(&format!("absent {path}\n"));
        }
    }
    for (family, table) in nft_tables() {
        text.push_str(&format!("table {family} {table}\n"));
    }
    fs::write(SAVED_STATE, text).with_context(|| format!("writing {SAVED_STATE}"))
}

/// Sets a sysctl (`net/ipv4/ip_forward` style key).
pub fn set_sysctl(key: &str, value: &str) -> Result<()> {
    fs::write(Path::new("/proc/sys").join(key), value).with_context(|| format!("sysctl {key}={value}"))
}

/// Removes everything the node left on the host and restores what [`save`] recorded.
/// Returns what it found and removed, for the log.
pub fn clean() -> Result<Vec<String>> {
    let mut found = Vec::new();
    let killed = kill_node_processes()?;
    if killed > 0 {
        found.push(format!("{killed} processes"));
    }
    let unmounted = unmount_below(&[LIB_DIR, RUN_DIR])?;
    if unmounted > 0 {
        found.push(format!("{unmounted} mounts"));
    }
    for dir in [LIB_DIR, RUN_DIR] {
        if Path::new(dir).exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {dir}"))?;
            found.push(dir.to_string());
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        run("ip", &["link", "del", BRIDGE])?;
        found.push(format!("bridge {BRIDGE}"));
    }
    let rules = clean_iptables()?;
    if rules > 0 {
        found.push(format!("{rules} iptables chains and rules"));
    }
    let sets = clean_ipsets()?;
    if sets > 0 {
        found.push(format!("{sets} ipsets"));
    }
    let cgroups = remove_cgroups()?;
    if cgroups > 0 {
        found.push(format!("{cgroups} cgroups"));
    }
    // Connection tracking entries of pod and Service addresses (they would expire anyway).
    if which("conntrack") {
        for cidr in [crate::controlplane::CLUSTER_CIDR, crate::controlplane::SERVICE_CIDR] {
            for dir in ["-s", "-d"] {
                let _ = Command::new("conntrack").args(["-D", dir, cidr]).output();
            }
        }
    }
    if let Ok(saved) = fs::read_to_string(SAVED_STATE) {
        for line in saved.lines() {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("sysctl"), Some(key), Some(value)) => {
                    let now = fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
                    if now.trim() != value {
                        set_sysctl(key, value)?;
                        found.push(format!("sysctl {key} {} -> {value}", now.trim()));
                    }
                }
                (Some("absent"), Some(path), None) if Path::new(path).exists() => {
                    unmount_below(&[path])?;
                    fs::remove_dir_all(path).with_context(|| format!("removing {path}"))?;
                    found.push(path.to_string());
                }
                _ => {}
            }
        }
        // iptables-nft leaves the tables it created, empty: remove those that were not there.
        let before: Vec<&str> = saved.lines().filter_map(|l| l.strip_prefix("table ")).collect();
        for (family, table) in nft_tables() {
            if !before.contains(&format!("{family} {table}").as_str()) && nft_table_empty(&family, &table) {
                run("nft", &["delete", "table", &family, &table])?;
                found.push(format!("empty nft table {family} {table}"));
            }
        }
        fs::remove_file(SAVED_STATE)?;
    }
    Ok(found)
}

/// The nftables tables on the host, (family, name); none if `nft` is not installed.
fn nft_tables() -> Vec<(String, String)> {
    if !which("nft") {
        return Vec::new();
    }
    run("nft", &["list", "tables"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("table"), Some(f), Some(t)) => Some((f.to_string(), t.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// A table with chains but no rule and no set.
fn nft_table_empty(family: &str, table: &str) -> bool {
    let Ok(text) = run("nft", &["list", "table", family, table]) else {
        return false;
    };
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with("table ") || l.starts_with("chain ") || l.starts_with("type ") || l == "}")
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pids of every process in the node's cgroup tree (pod containers and sandboxes), in any hierarchy.
fn cgroup_pids() -> Vec<i32> {
    let mut pids = Vec::new();
    for root in cgroup_roots() {
        walk_dirs(&root, &mut |dir| {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `/sys/fs/cgroup/<hierarchy>/audit-guard-node` (cgroup v1 and the hybrid unified tree), or
/// `/sys/fs/cgroup/audit-guard-node` on a pure cgroup v2 host.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut roots = vec![base.join(CGROUP_ROOT)];
    if let Ok(entries) = fs::read_dir(base) {
        for e in entries.flatten() {
            roots.push(e.path().join(CGROUP_ROOT));
        }
    }
    roots.into_iter().filter(|p| p.is_dir()).collect()
}

fn walk_dirs(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_dirs(&e.path(), f);
            }
        }
    }
}

/// Processes whose command line names the node's directories: containerd, its shims (which
/// outlive containerd), kubelet and the rest, left by a run that was killed.
fn processes_naming_node_dirs() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return pids };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&format!("{LIB_DIR}/")) || cmdline.contains(&format!("{RUN_DIR}/")) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILLs the node's processes until none is left; returns how many there were.
fn kill_node_processes() -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        // Daemons first, so that none of them starts a container again.
        let mut pids = processes_naming_node_dirs();
        pids.extend(cgroup_pids());
        if pids.is_empty() {
            return Ok(seen.len());
        }
        for pid in pids {
            seen.insert(pid);
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            bail!("node processes survive SIGKILL: {:?}", seen);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mount points below any of `dirs` (deepest first), from /proc/self/mountinfo.
fn mounts_below(dirs: &[&str]) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| dirs.iter().any(|d| m == d || m.starts_with(&format!("{d}/"))))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything below `dirs` (repeated: unmounting may uncover mounts below).
fn unmount_below(dirs: &[&str]) -> Result<usize> {
    let mut count = 0;
    for _ in 0..10 {
        let mounts = mounts_below(dirs);
        if mounts.is_empty() {
            return Ok(count);
        }
        for m in mounts {
            let c = std::ffi::CString::new(m.clone())?;
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                count += 1;
            }
        }
    }
    let left = mounts_below(dirs);
    if left.is_empty() {
        Ok(count)
    } else {
        bail!("mounts that do not go away: {left:?}")
    }
}

fn owned_chain(name: &str) -> bool {
    CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Removes the node's chains, and every rule that is in or jumps to one of them, from each
/// table of iptables and ip6tables (one iptables-restore per table, so it is atomic).
fn clean_iptables() -> Result<usize> {
    let mut removed = 0;
    for (save, restore) in [("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")] {
        if !which(save) {
            continue;
        }
        for table in ["filter", "nat", "mangle", "raw"] {
            let Ok(text) = run(save, &["-t", table]) else { continue };
            let (kept, n) = filter_ruleset(&text);
            if n == 0 {
                continue;
            }
            let mut child = Command::new(restore)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("running {restore}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                stdin.write_all(kept.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("{restore} ({table}): {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            removed += n;
        }
    }
    Ok(removed)
}

/// An iptables-save text without the node's chains and the rules in or to them; and how many
/// lines went.
fn filter_ruleset(text: &str) -> (String, usize) {
    let mut kept = String::new();
    let mut removed = 0;
    for line in text.lines() {
        let drop = if let Some(decl) = line.strip_prefix(':') {
            owned_chain(decl.split(' ').next().unwrap_or(""))
        } else if line.starts_with("-A ") {
            let words: Vec<&str> = line.split_whitespace().collect();
            owned_chain(words.get(1).copied().unwrap_or(""))
                || words
                    .windows(2)
                    .any(|w| (w[0] == "-j" || w[0] == "-g" || w[0] == "--jump" || w[0] == "--goto") && owned_chain(w[1]))
        } else {
            false
        };
        if drop {
            removed += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, removed)
}

fn clean_ipsets() -> Result<usize> {
    if !which("ipset") {
        return Ok(0);
    }
    let names = run("ipset", &["list", "-n"])?;
    let ours: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|n| IPSET_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect();
    // Sets may refer to each other (list:set): flush all first, then destroy.
    for n in &ours {
        let _ = run("ipset", &["flush", n]);
    }
    for n in &ours {
        run("ipset", &["destroy", n])?;
    }
    Ok(ours.len())
}

/// Removes the node's cgroup trees (deepest first); returns how many cgroups went.
fn remove_cgroups() -> Result<usize> {
    let mut count = 0;
    for root in cgroup_roots() {
        let mut dirs = Vec::new();
        walk_dirs(&root, &mut |d| dirs.push(d.to_path_buf()));
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => {
                        count += 1;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(e).with_context(|| format!("removing cgroup {}", d.display()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_filter_removes_the_nodes_chains_and_the_rules_to_them_only() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:CNI-abc - [0:0]\n:OTHER - [0:0]\n\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -s 10.244.0.5/32 -j CNI-abc\n-A POSTROUTING -o eth0 -j MASQUERADE\n\
-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X\n-A OTHER -j RETURN\nCOMMIT\n";
        let (kept, removed) = filter_ruleset(save);
        assert_eq!(removed, 5);
        assert_eq!(
            kept,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:OTHER - [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\n-A OTHER -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
