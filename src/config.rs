//! Command-line flags. Every flag has an environment-variable equivalent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::duration::{parse_duration, parse_moment};

#[derive(Parser, Debug)]
#[command(
    name = "audit-guard",
    version,
    about = "Keeps every Kubernaut SignalProcessing until its audit record is stored by the Data Storage Service"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the TLS admission webhook (9443), the finalizer controller (leader-elected), the
    /// buffered audit writer and the retention cleaner, with metrics (8080) and health (8081).
    Serve(Box<ServeArgs>),
    /// Run the Data Storage Service (8085): the audit REST API on PostgreSQL
    /// (--database-url) or on an embedded SQLite file (--data-dir) when no URL is given.
    Datastorage(Box<DataStorageArgs>),
    /// Generate a development CA and a webhook serving certificate; print the caBundle.
    Certs(CertsArgs),
    /// Print the SignalProcessing CRD this project ships, generated from its Rust types.
    Crd,
    /// The Helm chart's pre-delete hook: exit 1, naming them, while any SignalProcessing is
    /// being deleted with audit-guard's finalizer on it (in-cluster or KUBECONFIG credentials).
    PreDeleteCheck,
    /// The auditor's commands.
    #[command(flatten)]
    Auditor(AuditorCommand),
}

/// The auditor's commands ([`crate::auditor::cli`]): each exits 0 when its check passed, 1 when
/// it failed, 2 when it could not check.
#[derive(Subcommand, Debug)]
pub enum AuditorCommand {
    /// Auditor: recompute the hash chain and check every stored row of a period, through Data
    /// Storage's API or straight from its database (read-only); exit 1 unless intact.
    Verify(Box<VerifyArgs>),
    /// Auditor: download a signed export (NDJSON or CSV) and its signed manifest.
    Export(Box<ExportArgs>),
    /// Auditor: check an export against its manifest and signature, offline; exit 1 if not.
    VerifyExport(VerifyExportArgs),
    /// Auditor: the period report (markdown, JSON or HTML).
    Report(Box<ReportArgs>),
    /// Auditor: hold the Kubernetes API server's audit log against Data Storage's records:
    /// deletions without a record, records without a deletion; exit 1 if any.
    Witness(Box<WitnessArgs>),
    /// Auditor: check the transparency log Data Storage serves with its public key alone:
    /// the latest checkpoint's signature, that it extends a checkpoint saved earlier, and that
    /// every entry it covers is served; exit 1 if not.
    VerifyLog(Box<VerifyLogArgs>),
    /// Auditor: run a transparency log witness (C2SP tlog-witness) in your own trust domain:
    /// cosigns a log's checkpoints only when each extends the last one it cosigned, and refuses
    /// a fork with 409. Not the `witness` command, which reads the API server's audit log.
    LogWitness(Box<LogWitnessArgs>),
    /// Generate a chain key file, an export signing key pair, a transparency log key and a
    /// witness key.
    Keys(KeysArgs),
}

/// `log-witness`: which key cosigns, which logs it follows, where it keeps their state.
#[derive(Args, Debug, Clone)]
pub struct LogWitnessArgs {
    /// The witness's signer key (`PRIVATE+KEY+<name>+<key ID>+<base64>`, a cosignature key)
    /// that `audit-guard keys --witness-key` writes; hand its `.pub` to the log's operator.
    #[arg(long, env = "AUDIT_GUARD_WITNESS_KEY_FILE")]
    pub key_file: PathBuf,
    /// A log to witness: the file holding its verifier key (`log.key.pub`), whose name is the
    /// log's origin; `ORIGIN=FILE` when the origin differs. Repeat for several logs.
    #[arg(long = "log-public-key", required = true, value_parser = parse_log_public_key)]
    pub log_public_keys: Vec<LogPublicKeyArg>,
    /// Directory keeping the latest cosigned checkpoint of each log (created if missing); it
    /// must survive restarts, or the witness could be shown a fork it already refused.
    #[arg(long, env = "AUDIT_GUARD_WITNESS_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub listen: SocketAddr,
    /// Directory holding tls.crt and tls.key (reloaded when they change).
    #[arg(long, conflicts_with = "plain_http")]
    pub tls_cert_dir: Option<PathBuf>,
    /// Serve plain HTTP (the log's signature and the witness's cosignature protect the content;
    /// meant for a witness on localhost or behind the auditor's own TLS proxy).
    #[arg(long)]
    pub plain_http: bool,
}

/// One `--log-public-key`: an optional origin and the verifier key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPublicKeyArg {
    pub origin: Option<String>,
    pub file: PathBuf,
}

fn parse_log_public_key(s: &str) -> Result<LogPublicKeyArg, String> {
    match s.split_once('=') {
        Some((origin, file)) if !origin.is_empty() && !file.is_empty() => Ok(LogPublicKeyArg {
            origin: Some(origin.to_string()),
            file: file.into(),
        }),
        Some(_) => Err("expected FILE or ORIGIN=FILE".into()),
        None if s.is_empty() => Err("expected FILE or ORIGIN=FILE".into()),
        None => Ok(LogPublicKeyArg {
            origin: None,
            file: s.into(),
        }),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum ApiMode {
    /// The design document's `/api/v1/audit/signal-processing` endpoints.
    #[default]
    SignalProcessing,
    /// Kubernaut's unified `/api/v1/audit/events` API.
    Events,
}

/// How to reach Data Storage's API.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Data Storage's base URL, e.g. https://audit-guard-datastorage.audit-guard.svc:8085.
    #[arg(long = "url", env = "AUDIT_GUARD_DATASTORAGE_URL")]
    pub url: Option<String>,
    /// A file holding a bearer token that may read (`get`, `list`): an auditor bound to the
    /// ClusterRole audit-guard-datastorage-reader, or a member of the readers group.
    #[arg(long = "token-file", env = "AUDIT_GUARD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA Data Storage's certificate must be signed by (the only one trusted).
    #[arg(long = "ca-file", env = "AUDIT_GUARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one answer (a verification of millions of rows takes a while).
    #[arg(long = "timeout", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The name Data Storage's certificate must carry when --url names another host, e.g.
    /// audit-guard-datastorage.audit-guard.svc through `kubectl port-forward` on 127.0.0.1:
    /// the connection goes to --url's address, the TLS check is made against this name.
    #[arg(long = "tls-server-name", env = "AUDIT_GUARD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

/// How to read the database directly (read-only).
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL of a role that may SELECT the audit tables.
    #[arg(long, env = "AUDIT_GUARD_VERIFY_DATABASE_URL", conflicts_with_all = ["database_url_file", "sqlite"])]
    pub database_url: Option<String>,
    /// A file holding that URL.
    #[arg(long, conflicts_with = "sqlite")]
    pub database_url_file: Option<PathBuf>,
    /// Data Storage's SQLite file (audit.db), opened read-only.
    #[arg(long)]
    pub sqlite: Option<PathBuf>,
    /// The chain key file (a copy of Data Storage's): needed to recompute the links.
    #[arg(long, env = "AUDIT_GUARD_CHAIN_KEY_FILE")]
    pub chain_key_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Rows of the period (a record by when Data Storage stored it) from this moment (RFC 3339,
    /// a date such as 2026-11-01, or a duration back from now such as 7d)...
    #[arg(long, value_parser = parse_moment)]
    pub since: Option<DateTime<Utc>>,
    /// ...until before this one. The chain's links are walked in full either way.
    #[arg(long, value_parser = parse_moment)]
    pub until: Option<DateTime<Utc>>,
    /// Months older than this may be gone with their partition (the retention you expect); 0: none may.
    #[arg(long, default_value_t = 0)]
    pub retention_months: u32,
    /// Heads published earlier that must still be in the chain, as they were: a file written
    /// by `verify --output` or an export's `.manifest.json`. Catches a chain cut back.
    #[arg(long = "anchor")]
    pub anchors: Vec<PathBuf>,
    /// Write the full JSON result here ("-": stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyLogArgs {
    /// The log's verifier key (`<name>+<key ID>+<base64>`, e.g. the `log.key.pub` that
    /// `audit-guard keys --log-key` wrote), handed over by the operator.
    #[arg(long)]
    pub log_key: PathBuf,
    /// A checkpoint saved earlier (by `--save`): the latest must extend it.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Write the latest checkpoint here once it checks, to pass as --checkpoint next time.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Hold the log against this NDJSON export (checked with verify-export) instead of an export
    /// fetched now: every item it holds must have its entry, every entry its item.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Entries of months older than this may have lost their items to retention; 0: none may.
    #[arg(long, default_value_t = 0)]
    pub retention_months: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Rows from this moment (RFC 3339, a date, or a duration back from now such as 7d; records
    /// by when Data Storage stored them, amendments by amended_at, break-glass events by at).
    #[arg(long, value_parser = parse_moment)]
    pub since: Option<DateTime<Utc>>,
    /// Rows before this moment.
    #[arg(long, value_parser = parse_moment)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
    pub format: ExportFormat,
    /// The export file; `<out>.manifest.json` and `<out>.sig` are written beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// A checkpoint saved earlier (by `verify-export --save` or `verify-log --save`): the export
    /// then carries the log's consistency proof from it.
    #[arg(long)]
    pub previous_checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyExportArgs {
    /// The export file.
    pub file: PathBuf,
    /// Its manifest (default `<file>.manifest.json`).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The Ed25519 signature over the manifest, 64 raw bytes (default `<file>.sig`).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Data Storage's export signing public key (PEM), obtained out of band.
    #[arg(long)]
    pub public_key: PathBuf,
    /// The log's verifier key (`log.key.pub`): check the log's evidence the export carries —
    /// the checkpoint, every row's entry, the entries missing, the consistency. Without it
    /// only the manifest, the file's digest and its counts are checked.
    #[arg(long)]
    pub log_key: Option<PathBuf>,
    /// A checkpoint saved earlier (by `--save`): the export's checkpoint must extend it.
    #[arg(long, requires = "log_key")]
    pub checkpoint: Option<PathBuf>,
    /// Write the export's checkpoint here once everything checks, to pass as --checkpoint next time.
    #[arg(long, requires = "log_key")]
    pub save: Option<PathBuf>,
    /// A witness's cosignature verifier key whose cosignature the checkpoint must carry (repeatable).
    #[arg(long, requires = "log_key")]
    pub witness_key: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Markdown,
    Json,
    Html,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Start of the period (inclusive): RFC 3339, a date such as 2026-11-01 (its midnight UTC),
    /// or a duration back from now such as 31d.
    #[arg(long, value_parser = parse_moment)]
    pub since: DateTime<Utc>,
    /// End of the period (exclusive), in the same forms.
    #[arg(long, value_parser = parse_moment)]
    pub until: DateTime<Utc>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub format: ReportFormat,
    /// Write the report here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Prometheus that scrapes `audit-guard serve`: the buffered writers' drops come from it.
    #[arg(long)]
    pub prometheus_url: Option<String>,
    /// As for `verify`.
    #[arg(long, default_value_t = 0)]
    pub retention_months: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug, Clone)]
pub struct WitnessArgs {
    /// The API server's audit log files (audit.k8s.io/v1 Event JSON lines), rotated ones included.
    #[arg(long = "audit-log", required = true)]
    pub audit_logs: Vec<PathBuf>,
    /// Only these namespaces (default: all).
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Do not read the API server's current state: every deletion the log shows counts as
    /// completed (for auditors without API access; a deletion still waiting shows as missing).
    #[arg(long)]
    pub no_cluster: bool,
    /// Records are read from this verified NDJSON export instead of Data Storage's API.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// The kubeconfig for reading the API server's current state (default: $KUBECONFIG, then
    /// ~/.kube/config, then the in-cluster service account).
    #[arg(long, conflicts_with = "no_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, conflicts_with = "no_cluster")]
    pub context: Option<String>,
    /// How far before the log's first event to read records (a CR completed days before it
    /// was deleted has its record from then).
    #[arg(long, default_value = "31days", value_parser = parse_duration)]
    pub lookback: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug, Clone)]
pub struct KeysArgs {
    /// Chain key file: created with one key, or (if it exists) a new key appended — the new
    /// key signs from the next restart; the old ones keep verifying (rotation).
    #[arg(long)]
    pub chain_key: Option<PathBuf>,
    /// The new chain key's id (default: the date and time).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Export signing key: writes this file (PKCS#8 PEM, mode 0600) and `<file>.pub`.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// Transparency log key: writes this file (a C2SP signed-note private key, mode 0600;
    /// Data Storage's --log-signing-key-file) and `<file>.pub` (the verifier key auditors use).
    #[arg(long)]
    pub log_key: Option<PathBuf>,
    /// The log's name (its checkpoints' origin), e.g. the host auditors reach it by.
    #[arg(long, default_value = "audit-guard.local/datastorage")]
    pub log_name: String,
    /// Witness key for `log-witness`: writes this file (a C2SP signed-note cosignature key,
    /// mode 0600) and `<file>.pub` (the verifier key the log's operator puts in the witness
    /// policy).
    #[arg(long)]
    pub witness_key: Option<PathBuf>,
    /// The witness's name, e.g. the host the log reaches it by.
    #[arg(long, default_value = "audit-guard.local/witness")]
    pub witness_name: String,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory holding tls.crt and tls.key; reloaded when they change.
    #[arg(long, env = "AUDIT_GUARD_CERT_DIR", default_value = "/tmp/k8s-webhook-server/serving-certs")]
    pub cert_dir: PathBuf,
    /// Webhook listener (TLS only).
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Prometheus metrics listener (/metrics).
    #[arg(long, env = "AUDIT_GUARD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Health listener (/healthz, /readyz).
    #[arg(long, env = "AUDIT_GUARD_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// PEM CA bundle: when given, only clients presenting a certificate it signed (the API
    /// server, configured through its admission kubeconfig) complete the TLS handshake on the
    /// webhook port. Reloaded when the file changes.
    #[arg(long, env = "AUDIT_GUARD_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Largest AdmissionReview body accepted, in bytes; larger ones get 413. A SignalProcessing
    /// is at most ~1.5 MiB (etcd's request limit) and an UPDATE review carries it twice, so
    /// 4 MiB admits every genuine review.
    #[arg(long, env = "AUDIT_GUARD_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// A request body must arrive whole within this time, else 408 (the API server sends it at once).
    #[arg(long, env = "AUDIT_GUARD_BODY_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Review bytes held at once across all requests; more wait (then 503). With parsing this
    /// is the webhook's main memory use: 32 MiB keeps it well inside a 256 Mi limit while
    /// thousands of ordinary (few-KiB) reviews fit at once.
    #[arg(long, env = "AUDIT_GUARD_MAX_IN_FLIGHT_REVIEW_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_in_flight_review_bytes: usize,
    /// Webhook connections open at once (more wait in the backlog). Each HTTP/2 connection may
    /// buffer up to 1 MiB of unread request data, so 64 bound that to 64 MiB; the API servers
    /// of a cluster need a handful.
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_MAX_CONNECTIONS", default_value_t = 64)]
    pub webhook_max_connections: usize,
    /// Webhook connections open at once from one peer address (the API server needs a handful;
    /// at the cap the peer's longest-idle connection is closed, or the newcomer refused).
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_MAX_CONNECTIONS_PER_PEER", default_value_t = 32)]
    pub webhook_max_connections_per_peer: usize,
    /// TLS handshakes in progress at once on the webhook port; at the cap the peer holding the
    /// most gives up its oldest unfinished one to a newcomer from another peer.
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_MAX_HANDSHAKES", default_value_t = 128)]
    pub webhook_max_handshakes: usize,
    /// A webhook client must finish its TLS handshake within this.
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_HANDSHAKE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub webhook_handshake_timeout: Duration,
    /// A webhook connection with no review in flight for this long is closed gracefully.
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub webhook_idle_timeout: Duration,
    /// Every webhook connection is closed gracefully at this age (the API server reconnects); 0 never.
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_MAX_CONNECTION_AGE", default_value = "10m", value_parser = parse_duration)]
    pub webhook_max_connection_age: Duration,
    /// Concurrent HTTP/2 streams per webhook connection (the API server opens another
    /// connection when it needs more).
    #[arg(long, env = "AUDIT_GUARD_WEBHOOK_MAX_STREAMS", default_value_t = 32)]
    pub webhook_max_streams: u32,
    /// Username allowed to remove the finalizer: the controller's ServiceAccount.
    #[arg(
        long,
        env = "AUDIT_GUARD_CONTROLLER_IDENTITY",
        default_value = "system:serviceaccount:audit-guard:audit-guard"
    )]
    pub controller_identity: String,
    /// Group whose members may force the finalizer off (recorded as a `forced` audit record).
    #[arg(long, env = "AUDIT_GUARD_BREAK_GLASS_GROUP", default_value = "audit-guard:break-glass")]
    pub break_glass_group: String,
    /// Publish a Normal `AuditPersisted` Event for every stored record. Off by default: Events
    /// are for warnings and notable changes, and in a mass cleanup these are one extra API
    /// write per object (Warnings — AuditPersistFailed, AuditRecordConflict — are always sent).
    #[arg(long, env = "AUDIT_GUARD_SUCCESS_EVENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub success_events: bool,
    /// Whether /readyz also requires Data Storage to answer its /readyz.
    #[arg(long, env = "AUDIT_GUARD_READYZ_CHECKS_DATASTORAGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub readyz_checks_datastorage: bool,

    #[command(flatten)]
    pub datastorage: DataStorageClientArgs,

    /// Namespaces to watch (comma-separated); empty means all namespaces.
    #[arg(long, env = "AUDIT_GUARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Delete SignalProcessings whose status.completionTime is older than this; 0 disables.
    #[arg(long, env = "AUDIT_GUARD_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// How often the retention cleaner looks for expired SignalProcessings.
    #[arg(long, env = "AUDIT_GUARD_RETENTION_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub retention_interval: Duration,

    /// Buffered writer: most records held in memory before new ones are dropped (and counted).
    #[arg(long, env = "AUDIT_GUARD_BUFFER_SIZE", default_value_t = 10_000)]
    pub buffer_size: usize,
    /// Buffered writer: most records per batch POST (Kubernaut's Data Storage rejects more than 500).
    #[arg(long, env = "AUDIT_GUARD_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// Buffered writer: flush at least this often.
    #[arg(long, env = "AUDIT_GUARD_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Lease used for leader election of the controller.
    #[arg(long, env = "AUDIT_GUARD_LEASE_NAME", default_value = "audit-guard-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (the pod's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "audit-guard")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease; defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease is valid without renewal.
    #[arg(long, env = "AUDIT_GUARD_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Upper bound for a graceful shutdown (in-flight reviews, buffer flush, lease release).
    #[arg(long, env = "AUDIT_GUARD_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Run without the admission webhook listener (controller only).
    #[arg(long, env = "AUDIT_GUARD_DISABLE_WEBHOOK", default_value_t = false)]
    pub disable_webhook: bool,
    /// Run without the finalizer controller, writer and retention cleaner (webhook only).
    #[arg(long, env = "AUDIT_GUARD_DISABLE_CONTROLLER", default_value_t = false)]
    pub disable_controller: bool,
}

/// How `serve` reaches the Data Storage Service.
#[derive(Args, Debug, Clone)]
pub struct DataStorageClientArgs {
    /// Base URL of the Data Storage Service.
    #[arg(
        long = "datastorage-url",
        env = "DATASTORAGE_URL",
        default_value = "https://audit-guard-datastorage.audit-guard.svc:8085"
    )]
    pub url: String,
    /// PEM CA bundle for an https Data Storage URL: when given, the only CA trusted (the
    /// system roots are not), so only a certificate it signed is accepted.
    #[arg(long = "datastorage-ca-file", env = "DATASTORAGE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Bearer token file, re-read when it changes: a projected ServiceAccount token with
    /// audience `audit-guard-datastorage`, the audience Data Storage's TokenReview asks for.
    #[arg(long = "datastorage-token-file", env = "DATASTORAGE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Send the token even when the Data Storage URL is plain `http://`. Without it `serve`
    /// refuses to start with an http URL and a token file. Whoever can read the traffic (any
    /// pod or node on the path) then holds the token until it expires, with every right its
    /// identity has, and can answer for Data Storage; use only with a token whose identity
    /// may do nothing but write to Data Storage.
    #[arg(
        long = "datastorage-allow-plain-http-token",
        env = "DATASTORAGE_ALLOW_PLAIN_HTTP_TOKEN",
        default_value_t = false
    )]
    pub allow_plain_http_token: bool,
    /// Timeout of one request to Data Storage.
    #[arg(long = "datastorage-timeout", env = "DATASTORAGE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Which Data Storage API to write to.
    #[arg(long = "datastorage-api", env = "DATASTORAGE_API", value_enum, default_value_t = ApiMode::SignalProcessing)]
    pub api_mode: ApiMode,
    /// Events mode: after Data Storage queued an event (202, its dead-letter queue), poll until
    /// it appears and POST it again only once this long has passed with no write queued or
    /// failed (the queue replays every copy it holds; its first replay comes after about a minute).
    #[arg(long = "events-replay-window", env = "DATASTORAGE_EVENTS_REPLAY_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub events_replay_window: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct DataStorageArgs {
    #[command(subcommand)]
    pub command: Option<DataStorageCommand>,
    /// Listen address.
    #[arg(long, env = "DATASTORAGE_LISTEN", default_value = "0.0.0.0:8085")]
    pub listen: SocketAddr,
    /// Directory holding tls.crt and tls.key (reloaded when they change): Data Storage serves TLS.
    #[arg(long, env = "DATASTORAGE_TLS_CERT_DIR", conflicts_with = "plain_http")]
    pub tls_cert_dir: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS. For local use only: whoever can intercept the traffic
    /// can then answer 201 without storing anything.
    #[arg(long, env = "DATASTORAGE_PLAIN_HTTP", default_value_t = false)]
    pub plain_http: bool,
    /// Client connections open at once; at the cap new ones wait in the kernel backlog.
    #[arg(long, env = "DATASTORAGE_MAX_CLIENT_CONNECTIONS", default_value_t = 1024)]
    pub max_client_connections: usize,
    /// A request head (HTTP/1) must arrive within this; also how long an idle connection stays open.
    #[arg(long, env = "DATASTORAGE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Client connections open at once from one peer address; at the cap the peer's
    /// longest-idle connection is closed, or the newcomer refused when all are busy.
    #[arg(long, env = "DATASTORAGE_MAX_CLIENT_CONNECTIONS_PER_PEER", default_value_t = 512)]
    pub max_client_connections_per_peer: usize,
    /// TLS handshakes in progress at once; at the cap the peer holding the most gives up its
    /// oldest unfinished one to a newcomer from another peer.
    #[arg(long, env = "DATASTORAGE_MAX_HANDSHAKES", default_value_t = 256)]
    pub max_handshakes: usize,
    /// A client must finish its TLS handshake within this.
    #[arg(long, env = "DATASTORAGE_HANDSHAKE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully.
    #[arg(long, env = "DATASTORAGE_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Every connection is closed gracefully at this age (clients reconnect); 0 never.
    #[arg(long, env = "DATASTORAGE_MAX_CONNECTION_AGE", default_value = "10m", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// PostgreSQL URL of the runtime role; without it (or --database-url-file), an embedded
    /// SQLite file in --data-dir is used.
    #[arg(long, env = "DATABASE_URL", conflicts_with = "database_url_file")]
    pub database_url: Option<String>,
    /// A file holding the PostgreSQL URL (a mounted Secret; keeps the password out of the environment).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Home of the embedded SQLite file (audit.db), used when no database URL is given.
    #[arg(long, env = "DATASTORAGE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Static bearer tokens, in kube-apiserver's --token-auth-file format: token,user,uid[,"g1,g2"].
    #[arg(long, env = "DATASTORAGE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Authenticate bearer tokens with the Kubernetes TokenReview API and authorize with
    /// SubjectAccessReview (the default when running in a cluster).
    #[arg(long, env = "DATASTORAGE_TOKEN_REVIEW", default_value_t = false)]
    pub token_review: bool,
    /// The audience tokens must be minted for (TokenReview mode).
    #[arg(long, env = "DATASTORAGE_TOKEN_AUDIENCE", default_value = crate::datastorage::authz::DEFAULT_TOKEN_AUDIENCE)]
    pub token_audience: String,
    /// TokenReview mode: a refused token is refused again without a review for this long.
    #[arg(long, env = "DATASTORAGE_TOKEN_REVIEW_REFUSED_TTL", default_value = "10s", value_parser = parse_duration)]
    pub token_review_refused_ttl: Duration,
    /// TokenReview mode: reviews per second of tokens not accepted in the last hour; beyond
    /// it (and the burst) such tokens get 429 without a review. Known tokens are never held back.
    #[arg(long, env = "DATASTORAGE_TOKEN_REVIEW_RATE", default_value_t = 10.0)]
    pub token_review_rate: f64,
    /// TokenReview mode: reviews of unknown tokens allowed at once after a quiet spell.
    #[arg(long, env = "DATASTORAGE_TOKEN_REVIEW_BURST", default_value_t = 20)]
    pub token_review_burst: u32,
    /// Tokens-file mode: members of this group may write (create) and read (get, list).
    #[arg(long, env = "DATASTORAGE_WRITERS_GROUP", default_value = crate::datastorage::authz::DEFAULT_WRITERS_GROUP)]
    pub writers_group: String,
    /// Tokens-file mode: members of this group may read (get, list).
    #[arg(long, env = "DATASTORAGE_READERS_GROUP", default_value = crate::datastorage::authz::DEFAULT_READERS_GROUP)]
    pub readers_group: String,
    /// Turn authentication and authorization off. The only way to do so; never in production.
    #[arg(long, env = "DATASTORAGE_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,
    /// Most records accepted by one batch POST.
    #[arg(long, env = "DATASTORAGE_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "DATASTORAGE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// A request body not received completely within this gets 408.
    #[arg(long, env = "DATASTORAGE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Oldest time a record or event may carry, before the moment it is received.
    #[arg(long, env = "DATASTORAGE_TIME_WINDOW_PAST", default_value = "400days", value_parser = parse_duration)]
    pub time_window_past: Duration,
    /// Latest time a record or event may carry, after the moment it is received.
    #[arg(long, env = "DATASTORAGE_TIME_WINDOW_FUTURE", default_value = "5m", value_parser = parse_duration)]
    pub time_window_future: Duration,
    /// Widest since..until range one statistics request may cover.
    #[arg(long, env = "DATASTORAGE_STATS_MAX_RANGE", default_value = "31days", value_parser = parse_duration)]
    pub stats_max_range: Duration,
    /// PostgreSQL cancels any statement of the service that runs longer.
    #[arg(long, env = "DATASTORAGE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub statement_timeout: Duration,
    /// Whole-request bound once a request is admitted (503 after it).
    #[arg(long, env = "DATASTORAGE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Writes (every POST) handled at once; more wait for a permit up to --request-timeout.
    #[arg(long, env = "DATASTORAGE_MAX_CONCURRENT_WRITES", default_value_t = 64)]
    pub max_concurrent_writes: usize,
    /// Reads handled at once; more wait up to a second, then get 503 with Retry-After.
    #[arg(long, env = "DATASTORAGE_MAX_CONCURRENT_READS", default_value_t = 16)]
    pub max_concurrent_reads: usize,
    /// PostgreSQL: drop partitions whose month ended longer ago than this many months (single-role
    /// mode only; with two roles run `datastorage migrate --retention-months`); 0 keeps everything.
    #[arg(long, env = "DATASTORAGE_RETENTION_MONTHS", default_value_t = 0)]
    pub retention_months: u32,
    /// PostgreSQL connections of the write pool (the deletion path's inserts).
    #[arg(long, env = "DATASTORAGE_MAX_CONNECTIONS", default_value_t = 8)]
    pub max_connections: u32,
    /// Connections of the read pool (listings and statistics), separate so readers never starve writes.
    #[arg(long, env = "DATASTORAGE_MAX_READ_CONNECTIONS", default_value_t = 2)]
    pub max_read_connections: u32,
    /// The hash chain's keys, `key_id:base64-secret` per line, the last one active (generate
    /// with `audit-guard keys`). Kept outside the database: whoever can change rows cannot
    /// re-chain them. Required with PostgreSQL; with SQLite, `<data-dir>/chain.key` is created
    /// when absent.
    #[arg(long, env = "DATASTORAGE_CHAIN_KEY_FILE")]
    pub chain_key_file: Option<PathBuf>,
    /// Chains written side by side (PostgreSQL): concurrent writers each take a free one.
    #[arg(long, env = "DATASTORAGE_CHAIN_SHARDS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub chain_shards: u32,
    /// Ed25519 private key (PKCS#8 PEM) that signs export manifests; its public key is served
    /// at /.well-known/audit-guard/export-signing-key.pem. Without it exports are refused
    /// (with SQLite, `<data-dir>/signing-key.pem` is created when absent).
    #[arg(long, env = "DATASTORAGE_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// The transparency log's checkpoint key: a C2SP signed-note private key
    /// (`PRIVATE+KEY+<name>+<key ID>+<base64>`, made with `audit-guard keys --log-key`); its name
    /// is the log's origin. Never stored in the database. Without it the log still sequences
    /// but no checkpoint is signed (the checkpoint endpoint answers 503); with SQLite,
    /// `<data-dir>/log.key` is created when absent.
    #[arg(long, env = "DATASTORAGE_LOG_SIGNING_KEY_FILE")]
    pub log_signing_key_file: Option<PathBuf>,
    /// How often the log's sequencer integrates stored items and signs a checkpoint.
    #[arg(long, env = "DATASTORAGE_LOG_SEQUENCE_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub log_sequence_interval: Duration,
    /// Witness policy file: one `witness <verifier key> <URL>` line per witness (C2SP
    /// tlog-witness; the key is the witness's cosignature key, e.g. the `.pub` that
    /// `audit-guard keys --witness-key` wrote). Each new checkpoint is pushed to each witness
    /// and their cosignatures are served with it. Needs --log-signing-key-file (or SQLite).
    #[arg(long, env = "DATASTORAGE_WITNESS_POLICY_FILE")]
    pub witness_policy_file: Option<PathBuf>,
    /// Auditors' requests (verify, export, report) handled at once; more get 503.
    #[arg(long, env = "DATASTORAGE_MAX_CONCURRENT_AUDITS", default_value_t = 2)]
    pub max_concurrent_audits: usize,
    /// Bound of an auditor's request until its answer starts (an export then streams).
    #[arg(long, env = "DATASTORAGE_AUDIT_REQUEST_TIMEOUT", default_value = "15m", value_parser = parse_duration)]
    pub audit_request_timeout: Duration,
    /// PostgreSQL statement timeout of the auditors' own pool.
    #[arg(long, env = "DATASTORAGE_AUDIT_STATEMENT_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub audit_statement_timeout: Duration,
    /// Widest since..until of one report.
    #[arg(long, env = "DATASTORAGE_REPORT_MAX_RANGE", default_value = "400days", value_parser = parse_duration)]
    pub report_max_range: Duration,
    #[command(flatten)]
    pub ddl: DdlArgs,
}

/// Bounds on DDL (migrations, creating and dropping partitions): a statement waiting for a lock
/// on the audit table makes every INSERT queue behind it, so it waits briefly and retries.
#[derive(Args, Debug, Clone)]
pub struct DdlArgs {
    /// Longest one DDL statement waits for a lock before giving up (and retrying with backoff).
    #[arg(long, env = "DATASTORAGE_DDL_LOCK_TIMEOUT", default_value = "50ms", value_parser = parse_duration)]
    pub ddl_lock_timeout: Duration,
    /// Longest one DDL statement runs (0: no bound); raise it for a migration that rewrites a
    /// large table.
    #[arg(long, env = "DATASTORAGE_DDL_STATEMENT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub ddl_statement_timeout: Duration,
    /// How long migrations and partition creation by the owner keep retrying before failing with
    /// an error naming the lock (the service's hourly partition upkeep retries until it succeeds).
    #[arg(long, env = "DATASTORAGE_DDL_RETRY_FOR", default_value = "5m", value_parser = parse_duration)]
    pub ddl_retry_for: Duration,
}

impl From<&DdlArgs> for crate::datastorage::postgres::DdlLimits {
    fn from(a: &DdlArgs) -> Self {
        Self {
            lock_timeout: a.ddl_lock_timeout,
            statement_timeout: a.ddl_statement_timeout,
            retry_for: a.ddl_retry_for,
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum DataStorageCommand {
    /// As the database owner: apply migrations, create the monthly partitions of the accepted
    /// time window and the next month, grant the runtime role INSERT and SELECT, drop partitions
    /// past the retention. Run before the service starts (and, with retention, daily).
    Migrate(MigrateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// PostgreSQL URL of the owner role.
    #[arg(long, env = "DATASTORAGE_OWNER_DATABASE_URL", conflicts_with = "database_url_file")]
    pub database_url: Option<String>,
    /// A file holding the owner's PostgreSQL URL.
    #[arg(long, env = "DATASTORAGE_OWNER_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// The role the service connects as: granted INSERT and SELECT on the parent tables, checked
    /// to hold nothing more (the command fails if it does).
    #[arg(long, env = "DATASTORAGE_RUNTIME_ROLE")]
    pub runtime_role: Option<String>,
    /// The service's --time-window-past: partitions are created for all of it.
    #[arg(long, env = "DATASTORAGE_TIME_WINDOW_PAST", default_value = "400days", value_parser = parse_duration)]
    pub time_window_past: Duration,
    /// Drop partitions whose month ended longer ago than this many months; 0 keeps everything.
    #[arg(long, env = "DATASTORAGE_RETENTION_MONTHS", default_value_t = 0)]
    pub retention_months: u32,
    #[command(flatten)]
    pub ddl: DdlArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Where to write ca.crt, ca.key, tls.crt and tls.key.
    #[arg(long, env = "AUDIT_GUARD_CERTS_OUT", default_value = "certs")]
    pub out_dir: PathBuf,
    /// Service name the API server calls the webhook by.
    #[arg(long, default_value = "audit-guard-webhook")]
    pub service: String,
    /// Namespace of that Service.
    #[arg(long, default_value = "audit-guard")]
    pub namespace: String,
    /// Extra subject alternative names (DNS names or IP addresses).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub extra_san: Vec<String>,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Keep an existing CA in --out-dir and only issue a new serving certificate.
    #[arg(long, default_value_t = false)]
    pub reuse_ca: bool,
}

// The library modules take settings structs of their own and know nothing of clap; what each
// flag means to them is said here.

impl From<&DataStorageClientArgs> for crate::client::ClientSettings {
    fn from(a: &DataStorageClientArgs) -> Self {
        Self {
            url: a.url.clone(),
            ca_file: a.ca_file.clone(),
            token_file: a.token_file.clone(),
            allow_plain_http_token: a.allow_plain_http_token,
            timeout: a.timeout,
        }
    }
}

impl From<&DataStorageArgs> for crate::datastorage::Settings {
    fn from(a: &DataStorageArgs) -> Self {
        Self {
            listen: a.listen,
            tls_cert_dir: a.tls_cert_dir.clone(),
            plain_http: a.plain_http,
            max_client_connections: a.max_client_connections,
            header_read_timeout: a.header_read_timeout,
            max_client_connections_per_peer: a.max_client_connections_per_peer,
            max_handshakes: a.max_handshakes,
            handshake_timeout: a.handshake_timeout,
            idle_timeout: a.idle_timeout,
            max_connection_age: a.max_connection_age,
            database_url: a.database_url.clone(),
            database_url_file: a.database_url_file.clone(),
            data_dir: a.data_dir.clone(),
            tokens_file: a.tokens_file.clone(),
            token_review: a.token_review,
            token_audience: a.token_audience.clone(),
            token_review_refused_ttl: a.token_review_refused_ttl,
            token_review_rate: a.token_review_rate,
            token_review_burst: a.token_review_burst,
            writers_group: a.writers_group.clone(),
            readers_group: a.readers_group.clone(),
            insecure_no_auth: a.insecure_no_auth,
            max_batch: a.max_batch,
            max_body_bytes: a.max_body_bytes,
            body_read_timeout: a.body_read_timeout,
            time_window_past: a.time_window_past,
            time_window_future: a.time_window_future,
            stats_max_range: a.stats_max_range,
            statement_timeout: a.statement_timeout,
            request_timeout: a.request_timeout,
            max_concurrent_writes: a.max_concurrent_writes,
            max_concurrent_reads: a.max_concurrent_reads,
            retention_months: a.retention_months,
            max_connections: a.max_connections,
            max_read_connections: a.max_read_connections,
            chain_key_file: a.chain_key_file.clone(),
            chain_shards: a.chain_shards,
            signing_key_file: a.signing_key_file.clone(),
            log_signing_key_file: a.log_signing_key_file.clone(),
            log_sequence_interval: a.log_sequence_interval,
            witness_policy_file: a.witness_policy_file.clone(),
            max_concurrent_audits: a.max_concurrent_audits,
            audit_request_timeout: a.audit_request_timeout,
            audit_statement_timeout: a.audit_statement_timeout,
            report_max_range: a.report_max_range,
            ddl: (&a.ddl).into(),
        }
    }
}

impl From<&MigrateArgs> for crate::datastorage::migrate::MigrateSettings {
    fn from(a: &MigrateArgs) -> Self {
        Self {
            database_url: a.database_url.clone(),
            database_url_file: a.database_url_file.clone(),
            runtime_role: a.runtime_role.clone(),
            time_window_past: a.time_window_past,
            retention_months: a.retention_months,
            ddl: (&a.ddl).into(),
        }
    }
}

impl From<&CertsArgs> for crate::certs::IssueSettings {
    fn from(a: &CertsArgs) -> Self {
        Self {
            out_dir: a.out_dir.clone(),
            service: a.service.clone(),
            namespace: a.namespace.clone(),
            extra_san: a.extra_san.clone(),
            days: a.days,
            reuse_ca: a.reuse_ca,
        }
    }
}

impl From<&ServeArgs> for crate::webhook::WebhookSettings {
    fn from(a: &ServeArgs) -> Self {
        use crate::webhook::{handlers::BodyLimits, policy::Policy};
        Self {
            cert_dir: a.cert_dir.clone(),
            client_ca_file: a.client_ca_file.clone(),
            addr: a.webhook_addr,
            limits: BodyLimits {
                max_bytes: a.max_body_bytes,
                read_timeout: a.body_read_timeout,
                in_flight_bytes: a.max_in_flight_review_bytes,
            },
            listener: crate::https::ListenerLimits {
                name: "webhook",
                max_connections: a.webhook_max_connections,
                max_connections_per_peer: a.webhook_max_connections_per_peer,
                max_handshakes: a.webhook_max_handshakes,
                handshake_timeout: a.webhook_handshake_timeout,
                h2_max_concurrent_streams: a.webhook_max_streams,
                header_read_timeout: a.body_read_timeout,
                idle_timeout: a.webhook_idle_timeout,
                max_connection_age: a.webhook_max_connection_age,
                ..crate::https::ListenerLimits::default()
            },
            policy: Policy {
                controller_identity: a.controller_identity.clone(),
                break_glass_group: a.break_glass_group.clone(),
            },
            build_record: crate::audit::from_cr::build_record,
            drain_timeout: a.shutdown_timeout,
        }
    }
}

/// `audit-guard datastorage <extra>` parsed, for unit tests.
#[cfg(test)]
pub fn datastorage_args(extra: &[&str]) -> DataStorageArgs {
    let argv = ["audit-guard", "datastorage"].iter().chain(extra).copied();
    match Cli::try_parse_from(argv).map(|c| c.command) {
        Ok(Command::Datastorage(a)) => *a,
        other => panic!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datastorage(extra: &[&str]) -> DataStorageArgs {
        datastorage_args(extra)
    }

    #[test]
    fn the_events_replay_window_defaults_to_the_documented_value() {
        let Ok(Cli {
            command: Command::Serve(serve),
            ..
        }) = Cli::try_parse_from(["audit-guard", "serve"])
        else {
            panic!("serve does not parse")
        };
        assert_eq!(
            serve.datastorage.events_replay_window,
            crate::kubernaut_api::queue::DEFAULT_REPLAY_WINDOW
        );
    }

    #[test]
    fn datastorage_defaults_are_the_shared_constants() {
        let a = datastorage(&[]);
        assert_eq!(a.time_window_past, crate::audit::TIME_WINDOW_PAST);
        assert_eq!(a.time_window_future, crate::audit::TIME_WINDOW_FUTURE);
        assert_eq!(a.token_audience, crate::datastorage::authz::DEFAULT_TOKEN_AUDIENCE);
        assert_eq!(
            crate::datastorage::Settings::from(&a).review_limits(),
            crate::datastorage::auth::DEFAULT_REVIEW_LIMITS
        );
        assert!(a.command.is_none());
        let m = match datastorage(&["migrate", "--database-url", "postgres://o@h/db", "--runtime-role", "app"]).command {
            Some(DataStorageCommand::Migrate(m)) => m,
            None => panic!("no migrate"),
        };
        assert_eq!(m.time_window_past, crate::audit::TIME_WINDOW_PAST);
        assert_eq!(m.runtime_role.as_deref(), Some("app"));
        let ddl = crate::datastorage::postgres::DdlLimits::default();
        assert_eq!(crate::datastorage::postgres::DdlLimits::from(&m.ddl), ddl);
        assert_eq!(crate::datastorage::postgres::DdlLimits::from(&a.ddl), ddl);
        assert!(Cli::try_parse_from(["audit-guard", "datastorage", "--database-url", "x", "--database-url-file", "f"]).is_err());
        assert!(Cli::try_parse_from(["audit-guard", "datastorage", "--plain-http", "--tls-cert-dir", "d"]).is_err());
        let l = crate::https::ListenerLimits::default();
        assert_eq!(
            (
                a.max_client_connections,
                a.header_read_timeout,
                a.max_client_connections_per_peer,
                a.max_handshakes
            ),
            (
                l.max_connections,
                l.header_read_timeout,
                l.max_connections_per_peer,
                l.max_handshakes
            )
        );
        assert_eq!(
            (a.handshake_timeout, a.idle_timeout, a.max_connection_age),
            (l.handshake_timeout, l.idle_timeout, l.max_connection_age)
        );
    }

    #[test]
    fn success_events_are_off_unless_asked_for() {
        let serve = |extra: &[&str]| match Cli::try_parse_from(["audit-guard", "serve"].iter().chain(extra)).map(|c| c.command) {
            Ok(Command::Serve(a)) => a,
            other => panic!("{other:?}"),
        };
        assert!(!serve(&[]).success_events);
        assert!(serve(&["--success-events", "true"]).success_events);
        assert!(!serve(&["--success-events", "false"]).success_events);
    }
}
