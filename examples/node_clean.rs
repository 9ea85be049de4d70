//! `make node-clean`: removes what a killed run of the test node (tests/e2e_node.rs) left on
//! this host — processes, mounts, the CNI bridge, iptables chains, ipsets, cgroups — and puts
//! back the sysctls and paths it recorded. Refuses while a node runs. Needs root.

fn main() -> anyhow::Result<()> {
    let _lock = audit_guard_harness::hoststate::lock(false)?;
    let found = audit_guard_harness::hoststate::clean()?;
    if found.is_empty() {
        println!("nothing of the test node's was left on this host");
    } else {
        println!("removed: {}", found.join(", "));
    }
    Ok(())
}
