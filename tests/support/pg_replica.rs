//! A replicated PostgreSQL of its own for fault tests: a primary and a streaming synchronous
//! standby from the Debian packages, on free loopback ports, in a temporary directory (owned
//! by the `postgres` OS user, as which every server runs when the tests run as root). The
//! primary can be SIGKILLed (with its backends, as when its machine is lost) and the standby
//! promoted. Everything is stopped and removed on drop; the machine's shared cluster is never
//! touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::controlplane::free_port;
use super::wait_for;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const STANDBY_NAME: &str = "standby1";
pub const OWNER: &str = "audit_guard";
pub const RUNTIME: &str = "audit_guard_app";
pub const DATABASE: &str = "audit_guard";

/// `synchronous_commit` on the primary: when a COMMIT (and so a 201) returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncCommit {
    /// Flushed on the primary and on the synchronous standby.
    On,
    /// Applied on the synchronous standby (visible to its readers).
    RemoteApply,
    /// Not even flushed on the primary.
    Off,
}

impl SyncCommit {
    pub fn setting(self) -> &'static str {
        match self {
            SyncCommit::On => "on",
            SyncCommit::RemoteApply => "remote_apply",
            SyncCommit::Off => "off",
        }
    }
}

/// One server of the pair.
pub struct Node {
    pub data: PathBuf,
    pub port: u16,
}

pub struct ReplicatedPg {
    dir: tempfile::TempDir,
    pub primary: Node,
    pub standby: Node,
    pub sync_commit: SyncCommit,
    /// Set once the primary is SIGKILLed: its stale pid file must not be acted on (the pid may
    /// belong to another process by then).
    primary_killed: std::sync::atomic::AtomicBool,
}

/// This process's effective uid is the owner of its /proc entry.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when this process is root (the servers refuse
/// root), bounded in time so that a wait that never ends (a commit waiting for a standby that
/// is not there) fails the test instead of hanging it.
fn pg_command(bin: &str) -> Command {
    let path = format!("{BIN}/{bin}");
    let mut c = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "timeout", "120"]);
        c
    } else {
        let mut c = Command::new("timeout");
        c.arg("120");
        c
    };
    c.arg(path);
    c
}

fn run(mut cmd: Command, what: &str) -> Result<Output> {
    // The postgres user may not enter the caller's working directory.
    let out = cmd.current_dir("/").output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Makes `path` the postgres user's when this process is root.
fn give_to_postgres(path: &Path) -> Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    run(
        {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(path);
            c
        },
        "chown",
    )?;
    Ok(())
}

impl ReplicatedPg {
    /// Initialises the primary, creates the roles and database as `scripts/postgres.sh` does,
    /// clones the standby with `pg_basebackup`, and waits until the primary reports it as its
    /// synchronous standby.
    pub async fn start(sync_commit: SyncCommit) -> Result<ReplicatedPg> {
        let dir = tempfile::Builder::new().prefix("audit-guard-pg-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("sockets"))?;
        give_to_postgres(dir.path())?;
        let pg = ReplicatedPg {
            primary: Node {
                data: dir.path().join("primary"),
                port: free_port()?,
            },
            standby: Node {
                data: dir.path().join("standby"),
                port: free_port()?,
            },
            dir,
            sync_commit,
            primary_killed: Default::default(),
        };
        let pg_dir = pg.dir.path().to_path_buf();
        let pg = tokio::task::spawn_blocking(move || -> Result<ReplicatedPg> {
            pg.init_primary()?;
            pg.clone_standby()?;
            Ok(pg)
        })
        .await
        .with_context(|| format!("setting up {}", pg_dir.display()))??;
        pg.psql(
            &pg.primary,
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"),
        )?;
        pg.psql(&pg.primary, "SELECT pg_reload_conf()")?;
        pg.wait_synchronous().await?;
        Ok(pg)
    }

    fn sockets(&self) -> PathBuf {
        self.dir.path().join("sockets")
    }

    fn conf(&self, node: &Node, sync_names: &str) -> String {
        format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nwal_keep_size = '128MB'\n\
             max_connections = 100\nshared_buffers = '32MB'\nfsync = on\n\
             synchronous_standby_names = '{sync_names}'\nsynchronous_commit = {}\n\
             logging_collector = off\n",
            node.port,
            self.sockets().display(),
            self.sync_commit.setting()
        )
    }

    fn init_primary(&self) -> Result<()> {
        let mut initdb = pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&self.primary.data)
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres", "--no-sync"]);
        run(initdb, "initdb")?;
        // No synchronous standby yet: the setup's commits would wait for one forever.
        append(&self.primary.data.join("postgresql.conf"), &self.conf(&self.primary, ""))?;
        self.pg_ctl(&self.primary, "start")?;
        let setup = [
            format!("CREATE ROLE {OWNER} LOGIN CREATEDB PASSWORD '{OWNER}'"),
            format!("CREATE ROLE {RUNTIME} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{RUNTIME}'"),
            format!("GRANT pg_signal_backend TO {OWNER}"),
            format!("CREATE DATABASE {DATABASE} OWNER {OWNER}"),
        ];
        for sql in setup {
            self.psql(&self.primary, &sql)?;
        }
        Ok(())
    }

    fn clone_standby(&self) -> Result<()> {
        let mut backup = pg_command("pg_basebackup");
        backup.arg("-D").arg(&self.standby.data).arg("-h").arg(self.sockets()).args([
            "-p",
            &self.primary.port.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ]);
        run(backup, "pg_basebackup")?;
        // After a promotion the standby is alone: naming a synchronous standby there would make
        // every commit wait forever.
        append(&self.standby.data.join("postgresql.conf"), &self.conf(&self.standby, ""))?;
        append(
            &self.standby.data.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host={} port={} user=postgres application_name={STANDBY_NAME}'\n",
                self.sockets().display(),
                self.primary.port
            ),
        )?;
        self.pg_ctl(&self.standby, "start")?;
        Ok(())
    }

    fn pg_ctl(&self, node: &Node, action: &str) -> Result<()> {
        let mut c = pg_command("pg_ctl");
        c.arg("-D")
            .arg(&node.data)
            .args(["-w", "-t", "60", "-l"])
            .arg(node.data.join("server.log"))
            .arg(action);
        run(c, &format!("pg_ctl {action}")).map(|_| ())
    }

    /// One statement as the superuser over the node's socket; its unaligned output.
    pub fn psql(&self, node: &Node, sql: &str) -> Result<String> {
        self.psql_in(node, "postgres", sql)
    }

    /// As [`ReplicatedPg::psql`], in `database`.
    pub fn psql_in(&self, node: &Node, database: &str, sql: &str) -> Result<String> {
        let mut c = pg_command("psql");
        c.arg("-h").arg(self.sockets()).args([
            "-p",
            &node.port.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-qAtX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        let out = run(c, &format!("psql {sql}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn url_for(role: &str, hosts: &str, database: &str) -> String {
        format!("postgres://{role}:{role}@{hosts}/{database}")
    }

    /// The libpq multi-host URL of both servers (the primary first), as the owner.
    pub fn owner_url(&self) -> String {
        Self::url_for(
            OWNER,
            &format!("127.0.0.1:{},127.0.0.1:{}", self.primary.port, self.standby.port),
            &format!("{DATABASE}?target_session_attrs=read-write"),
        )
    }

    /// The owner's URL of one server.
    pub fn node_url(&self, node: &Node) -> String {
        Self::url_for(OWNER, &format!("127.0.0.1:{}", node.port), DATABASE)
    }

    /// The owner's URL of the server that is the primary now: the standby once the primary was
    /// killed (the caller promotes it).
    pub fn primary_url(&self) -> String {
        match self.primary_killed.load(std::sync::atomic::Ordering::SeqCst) {
            true => self.node_url(&self.standby),
            false => self.node_url(&self.primary),
        }
    }

    /// The postmaster's pid, from its pid file.
    fn postmaster_pid(node: &Node) -> Result<i32> {
        let text = std::fs::read_to_string(node.data.join("postmaster.pid")).context("postmaster.pid")?;
        text.lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .context("the pid in postmaster.pid")
    }

    /// SIGKILLs the primary's postmaster and every backend it started: its clients' connections
    /// break at once, whatever they were doing, COMMIT included.
    pub fn kill_primary(&self) -> Result<()> {
        let pid = Self::postmaster_pid(&self.primary)?;
        self.primary_killed.store(true, std::sync::atomic::Ordering::SeqCst);
        let pids: Vec<String> = std::iter::once(pid).chain(children_of(pid)).map(|p| p.to_string()).collect();
        // A backend that exited meanwhile makes kill report failure; the rest are killed anyway.
        Command::new("kill").arg("-KILL").args(&pids).output().context("kill")?;
        Ok(())
    }

    /// Stops the standby (fast shutdown): the primary's commits wait for it.
    pub fn stop_standby(&self) -> Result<()> {
        self.pg_ctl(&self.standby, "stop")
    }

    /// Starts the standby again and waits until the primary counts it as synchronous.
    pub async fn start_standby(&self) -> Result<()> {
        self.pg_ctl(&self.standby, "start")?;
        self.wait_synchronous().await
    }

    /// Waits until the primary reports the standby as its synchronous one.
    async fn wait_synchronous(&self) -> Result<()> {
        wait_for("the standby to be synchronous", Duration::from_secs(60), || async {
            let out = self.psql(&self.primary, "SELECT sync_state FROM pg_stat_replication")?;
            Ok((out.trim() == "sync").then_some(()))
        })
        .await
    }

    /// Promotes the standby and waits until it accepts writes.
    pub fn promote_standby(&self) -> Result<()> {
        self.pg_ctl(&self.standby, "promote")
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| {
                // The command name may hold spaces: the fields after its closing parenthesis.
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            }) == Some(pid)
        })
        .collect()
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

impl Drop for ReplicatedPg {
    fn drop(&mut self) {
        let killed = self.primary_killed.load(std::sync::atomic::Ordering::SeqCst);
        for (node, gone) in [(&self.primary, killed), (&self.standby, false)] {
            if !gone && node.data.join("postmaster.pid").exists() {
                let mut c = pg_command("pg_ctl");
                c.arg("-D").arg(&node.data).args(["-m", "immediate", "-w", "stop"]);
                let _ = c.current_dir("/").output();
            }
        }
    }
}
