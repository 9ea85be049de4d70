//! PostgreSQL behind several hosts (streaming replication managed by CloudNativePG, Patroni,
//! ...): the libpq multi-host forms
//! `postgres://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write` and
//! `host=h1,h2 port=5432 user=u password=p dbname=db target_session_attrs=read-write` are
//! split into one single-host URL per server (sqlx connects to one host). Data Storage
//! writes, so with several hosts it always wants the primary: the pool connects to the server
//! that is not in recovery, a watcher re-probes the servers once a second, and after a
//! failover it points the pool at the new primary; connections to the old one break and are
//! dropped by the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// Percent-encodes everything but RFC 3986's unreserved characters (a space stays `%20`: a
/// URL's userinfo and path are not form-encoded).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How often the watcher asks the current server whether it is still the primary.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Bound on one probe (connect and query): a lost machine does not answer at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const DEFAULT_PORT: &str = "5432";

/// One single-host URL per server of `spec`, in the given order. A URL naming one host is
/// returned unchanged. `target_session_attrs` may be `any`, `read-write` or `primary` (Data
/// Storage writes, so it always looks for the primary) and is not passed on.
pub fn split_hosts(spec: &str) -> Result<Vec<String>, String> {
    let spec = spec.trim();
    if let Some((scheme, rest)) = spec.split_once("://") {
        split_url(scheme, rest, spec)
    } else if spec.contains('=') {
        keywords_to_urls(spec)
    } else {
        Err("a PostgreSQL connection string is a postgres:// URL or key=value pairs".into())
    }
}

fn check_session_attrs(value: &str) -> Result<(), String> {
    match value {
        "any" | "read-write" | "primary" => Ok(()),
        other => Err(format!(
            "target_session_attrs={other}: Data Storage writes, so it needs the primary (read-write)"
        )),
    }
}

fn split_url(scheme: &str, rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_session_attrs", v)) => check_session_attrs(v)?,
            _ => kept.push(pair),
        }
    }
    if !hosts.contains(',') && kept.len() == query.split('&').filter(|p| !p.is_empty()).count() {
        return Ok(vec![whole.to_string()]);
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    hosts
        .split(',')
        .map(|h| {
            if h.is_empty() {
                return Err(format!("an empty host in the host list {hosts:?}"));
            }
            Ok(format!("{scheme}://{userinfo}{h}{path}{query}"))
        })
        .collect()
}

/// The keyword form without its password, for logs (values quoted where they hold spaces).
pub fn redact_keywords(spec: &str) -> String {
    match keyword_pairs(spec) {
        Ok(pairs) => pairs
            .iter()
            .map(|(k, v)| match (k.as_str(), v.contains(char::is_whitespace)) {
                ("password", _) => format!("{k}=***"),
                (_, true) => format!("{k}='{v}'"),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(a connection string that does not parse)".to_string(),
    }
}

/// Splits `key=value key='quoted value'` pairs (libpq's keyword form).
fn keyword_pairs(spec: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("{key:?} has no value (key=value)"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or("a trailing backslash")?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of {key} lacks its closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or("a trailing backslash")?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn keywords_to_urls(spec: &str) -> Result<Vec<String>, String> {
    let (mut hosts, mut ports, mut user, mut password, mut dbname) = (None, None, None, None, None);
    let mut params = Vec::new();
    for (key, value) in keyword_pairs(spec)? {
        match key.as_str() {
            "host" => hosts = Some(value),
            "port" => ports = Some(value),
            "user" => user = Some(value),
            "password" => password = Some(value),
            "dbname" => dbname = Some(value),
            "target_session_attrs" => check_session_attrs(&value)?,
            "sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "application_name" => params.push((key, value)),
            other => return Err(format!("the connection keyword {other} is not supported; use the URL form")),
        }
    }
    let hosts: Vec<&str> = hosts.as_deref().unwrap_or("localhost").split(',').collect();
    let ports: Vec<&str> = ports.as_deref().unwrap_or(DEFAULT_PORT).split(',').collect();
    let port_for = |i: usize| -> Result<&str, String> {
        match ports.len() {
            1 => Ok(ports[0]),
            n if n == hosts.len() => Ok(ports[i]),
            n => Err(format!("{n} ports for {} hosts (give one, or one per host)", hosts.len())),
        }
    };
    let userinfo = match (&user, &password) {
        (Some(u), Some(p)) => format!("{}:{}@", url_encode(u), url_encode(p)),
        (Some(u), None) => format!("{}@", url_encode(u)),
        (None, Some(_)) => return Err("a password without a user".into()),
        (None, None) => String::new(),
    };
    let path = dbname.map(|d| format!("/{}", url_encode(&d))).unwrap_or_default();
    let query = if params.is_empty() {
        String::new()
    } else {
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect();
        format!("?{}", pairs.join("&"))
    };
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if h.is_empty() {
                return Err("an empty host in the host list".to_string());
            }
            let port = port_for(i)?;
            port.parse::<u16>().map_err(|_| format!("port {port:?} is not a port number"))?;
            let host = if h.contains(':') { format!("[{h}]") } else { h.to_string() };
            Ok(format!("postgres://{userinfo}{host}:{port}{path}{query}"))
        })
        .collect()
}

/// The servers of a multi-host setup and which of them the pools use now.
pub struct Servers {
    targets: Vec<PgConnectOptions>,
    current: AtomicUsize,
}

/// Whether `conn` is on a primary (a server that is not in recovery).
pub async fn is_primary(conn: &mut PgConnection) -> sqlx::Result<bool> {
    let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(conn).await?;
    Ok(!recovering)
}

fn describe(o: &PgConnectOptions) -> String {
    format!("{}:{}", o.get_host(), o.get_port())
}

async fn probe(target: &PgConnectOptions) -> Result<PgConnection, String> {
    let attempt = async {
        let mut conn = target.connect().await.map_err(|e| e.to_string())?;
        match is_primary(&mut conn).await {
            Ok(true) => Ok(conn),
            Ok(false) => {
                let _ = conn.close().await;
                Err("in recovery (a standby)".to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
}

impl Servers {
    pub fn new(urls: &[String]) -> anyhow::Result<Self> {
        let targets = urls.iter().map(|u| u.parse::<PgConnectOptions>()).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            targets,
            current: AtomicUsize::new(0),
        })
    }

    /// The options of the server the pools use now.
    pub fn current(&self) -> PgConnectOptions {
        self.targets[self.current.load(Ordering::SeqCst) % self.targets.len()].clone()
    }

    /// Tries every server in order and makes the first primary the current one; its open
    /// connection, or why each server was passed over.
    pub async fn locate(&self) -> Result<PgConnection, String> {
        let mut why = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            match probe(target).await {
                Ok(conn) => {
                    self.current.store(i, Ordering::SeqCst);
                    return Ok(conn);
                }
                Err(e) => why.push(format!("{}: {e}", describe(target))),
            }
        }
        Err(format!("no primary among the servers: {}", why.join("; ")))
    }

    /// Keeps `pool` on the primary: once a second asks the current server (over a connection of
    /// its own) whether it is still the primary; when it is not, or does not answer, locates the
    /// primary again and points the pool's new connections there. Ends when the pool is closed.
    pub fn watch(self: Arc<Self>, pool: PgPool, mut conn: Option<PgConnection>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !pool.is_closed() {
                tick.tick().await;
                let healthy = match conn.as_mut() {
                    Some(c) => matches!(tokio::time::timeout(PROBE_TIMEOUT, is_primary(c)).await, Ok(Ok(true))),
                    None => false,
                };
                if healthy {
                    continue;
                }
                conn = None;
                let before = self.current.load(Ordering::SeqCst);
                match self.locate().await {
                    Ok(c) => {
                        conn = Some(c);
                        let now = self.current();
                        if self.current.load(Ordering::SeqCst) != before {
                            tracing::warn!(primary = %describe(&now), "PostgreSQL primary changed; new connections go there");
                        }
                        pool.set_connect_options(now);
                    }
                    Err(e) => tracing::warn!(error = %e, "looking for the PostgreSQL primary"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_urls_pass_unchanged() {
        for url in [
            "postgres://u:p@db:5432/audit?sslmode=verify-full",
            "postgres://u@db/audit",
            "postgresql://u:p%40x@db/audit",
        ] {
            assert_eq!(split_hosts(url).unwrap(), vec![url.to_string()]);
        }
    }

    #[test]
    fn a_host_list_becomes_one_url_per_host() {
        let urls = split_hosts("postgres://u:p@h1:5432,h2:5433,[::1]:5434/audit?sslmode=require&target_session_attrs=read-write").unwrap();
        assert_eq!(
            urls,
            [
                "postgres://u:p@h1:5432/audit?sslmode=require",
                "postgres://u:p@h2:5433/audit?sslmode=require",
                "postgres://u:p@[::1]:5434/audit?sslmode=require",
            ]
        );
        assert_eq!(
            split_hosts("postgres://h1,h2/audit").unwrap(),
            ["postgres://h1/audit", "postgres://h2/audit"]
        );
        assert_eq!(
            split_hosts("postgres://u:p@db/audit?target_session_attrs=primary").unwrap(),
            ["postgres://u:p@db/audit"]
        );
    }

    #[test]
    fn the_keyword_form_becomes_urls() {
        let urls = split_hosts(
            "host=h1,h2 port=5432,5433 user=app password='p w\\'d' dbname=audit target_session_attrs=read-write sslmode=verify-full sslrootcert=/ca/ca.crt",
        )
        .unwrap();
        assert_eq!(
            urls,
            [
                "postgres://app:p%20w%27d@h1:5432/audit?sslmode=verify-full&sslrootcert=%2Fca%2Fca.crt",
                "postgres://app:p%20w%27d@h2:5433/audit?sslmode=verify-full&sslrootcert=%2Fca%2Fca.crt",
            ]
        );
        assert_eq!(
            split_hosts("host=a,b port=6000 dbname=d").unwrap(),
            ["postgres://a:6000/d", "postgres://b:6000/d"]
        );
        for url in &urls {
            assert!(url.parse::<PgConnectOptions>().is_ok(), "{url}");
        }
    }

    #[test]
    fn the_keyword_forms_password_is_not_logged() {
        assert_eq!(
            redact_keywords("host=a,b user=u password='s e' dbname=d"),
            "host=a,b user=u password=*** dbname=d"
        );
        assert!(!redact_keywords("host=a password='unterminated").contains("unterminated"));
    }

    #[test]
    fn what_cannot_reach_a_primary_is_refused() {
        for bad in [
            "postgres://u@h1,h2/db?target_session_attrs=read-only",
            "postgres://u@h1,h2/db?target_session_attrs=standby",
            "postgres://u@h1,,h2/db",
            "host=h1,h2 port=1,2,3",
            "host=h1 port=x",
            "host=h1 target_session_attrs=prefer-standby",
            "host=h1 hostaddr=10.0.0.1",
            "host=h1 password=p",
            "host=h1 password='open",
            "just-a-word",
        ] {
            assert!(split_hosts(bad).is_err(), "{bad}");
        }
    }
}
