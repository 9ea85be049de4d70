//! Serving certificates: a rustls config whose certificate follows tls.crt/tls.key in a
//! directory ([`crate::filewatch`]), optional client-certificate verification against a CA
//! file followed the same way, the certificate metrics, and the `certs` subcommand that issues
//! a development CA and serving cert.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use chrono::{Datelike, Utc};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio_util::sync::CancellationToken;

use crate::filewatch::{self, Stamp};

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
/// How often the certificate files are re-read without a notification.
pub use crate::filewatch::POLL_INTERVAL;
pub use metrics::CERT_EXPIRY;

/// The serving certificates' metrics, for the webhook's and Data Storage's alike (the idiom is
/// [`crate::metrics`]'s).
pub mod metrics {
    use prometheus::{GaugeVec, IntCounterVec};

    use crate::metrics::{counter_vec, declare, float_gauge_vec};

    declare! {
        /// Seconds until each loaded serving certificate expires, by certificate file: an expired
        /// webhook certificate with `failurePolicy: Fail` blocks every write of the resource, so it
        /// is alarmed well before (PrometheusRule `AuditGuardCertificateExpiresSoon`). Kept current
        /// by the reloader's polling.
        pub static CERT_EXPIRY: GaugeVec = float_gauge_vec("audit_guard_certificate_expiry_seconds", "Seconds until the loaded serving certificate expires (negative once expired), by certificate file", &["certificate"]);

        /// Reloads that swapped the served certificate (success) or kept the old one (failure).
        /// Named after the webhook, whose it first was; Data Storage's reloads count here too.
        pub static CERT_RELOADS: IntCounterVec = counter_vec("audit_guard_webhook_cert_reloads_total", "Serving certificate reloads by result", &["result"]), zero [["success"], ["failure"]];

        /// Reloads of the CA bundle this process trusts Data Storage by: success swapped in the
        /// new bundle, failure kept the old one (a half-written file, a bundle with no CA).
        pub static TRUSTED_CA_RELOADS: IntCounterVec = counter_vec("audit_guard_trusted_ca_reloads_total", "Reloads of the CA bundle Data Storage is trusted by, by result", &["result"]), zero [["success"], ["failure"]];

        /// When the earliest-expiring CA of that bundle expires (Unix seconds): once it has, no
        /// Data Storage certificate it issued verifies and every store waits.
        pub static TRUSTED_CA_NOT_AFTER: GaugeVec = float_gauge_vec("audit_guard_trusted_ca_not_after_seconds", "Unix time at which the earliest-expiring CA in the trusted bundle expires, by file", &["ca"]);
    }
}

/// The notAfter of a DER certificate, in Unix seconds.
pub fn not_after(der: &[u8]) -> Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("parsing the certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Parses a PEM chain and key into a rustls certified key, checking they belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .context("reading certificate PEM")?;
    if certs.is_empty() {
        bail!("no certificate in PEM");
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("reading key PEM")?
        .ok_or_else(|| anyhow!("no private key in PEM"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).context("unsupported private key")?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().context("certificate and key do not match")?;
    Ok(ck)
}

/// What is served now, with what it was parsed from (to see changes) and when it expires.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    fingerprint: Vec<u8>,
    not_after: i64,
}

/// The certificate currently served; swapped atomically, so handshakes in progress and
/// established connections keep whatever they started with.
#[derive(Debug)]
pub struct ReloadingResolver {
    dir: PathBuf,
    current: RwLock<Served>,
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

fn read_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let cert = fs::read(dir.join(CERT_FILE)).with_context(|| format!("reading {}", dir.join(CERT_FILE).display()))?;
    let key = fs::read(dir.join(KEY_FILE)).with_context(|| format!("reading {}", dir.join(KEY_FILE).display()))?;
    Ok((cert, key))
}

fn served(cert: Vec<u8>, key: Vec<u8>) -> Result<Served> {
    let ck = certified_key(&cert, &key)?;
    let not_after = not_after(ck.end_entity_cert().context("no end-entity certificate")?.as_ref())?;
    Ok(Served {
        key: Arc::new(ck),
        fingerprint: [cert, key].concat(),
        not_after,
    })
}

impl ReloadingResolver {
    /// Loads the pair once; fails when it cannot (the webhook must not start without a cert).
    pub fn load(dir: &Path) -> Result<Arc<Self>> {
        let (cert, key) = read_pair(dir)?;
        let me = Arc::new(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(served(cert, key)?),
        });
        me.report_expiry();
        Ok(me)
    }

    /// Re-reads the files; swaps only when their content changed and parses. A failure
    /// keeps the old certificate (it is likely a half-written update that will settle).
    pub fn reload(&self) -> Result<bool> {
        let (cert, key) = read_pair(&self.dir)?;
        let fingerprint = [cert.as_slice(), key.as_slice()].concat();
        if self.current.read().map(|c| c.fingerprint == fingerprint).unwrap_or(false) {
            return Ok(false);
        }
        let next = served(cert, key)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = next;
        }
        Ok(true)
    }

    /// Seconds until the served certificate expires, as of now.
    pub fn expires_in(&self) -> Option<i64> {
        let not_after = self.current.read().ok()?.not_after;
        Some(not_after - chrono::Utc::now().timestamp())
    }

    fn report_expiry(&self) {
        if let Some(secs) = self.expires_in() {
            let file = self.dir.join(CERT_FILE);
            CERT_EXPIRY.with_label_values(&[&file.display().to_string()]).set(secs as f64);
        }
    }

    fn reload_and_report(&self) {
        match self.reload() {
            Ok(true) => {
                metrics::CERT_RELOADS.with_label_values(&["success"]).inc();
                tracing::info!(dir = %self.dir.display(), "serving certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                metrics::CERT_RELOADS.with_label_values(&["failure"]).inc();
                tracing::warn!(dir = %self.dir.display(), error = %format!("{e:#}"), "serving certificate reload failed; keeping the current one");
            }
        }
        self.report_expiry();
    }

    /// Follows the directory (not the files: a Secret update replaces a symlink).
    pub fn spawn_reloader(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        filewatch::watch(&self.dir, POLL_INTERVAL, shutdown, move || me.reload_and_report());
    }
}

/// Client-certificate verification against a CA bundle file, reloaded when the file
/// changes (a failed reload keeps the current CA). A client without a certificate the CA
/// signed does not complete the TLS handshake.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    path: PathBuf,
    current: RwLock<(Arc<dyn ClientCertVerifier>, Vec<u8>)>,
}

fn client_verifier(pem: &[u8], path: &Path) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots
            .add(cert.with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("a CA certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in {}", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .with_context(|| format!("client CA {}", path.display()))
}

impl ReloadingClientVerifier {
    pub fn load(path: &Path) -> Result<Arc<Self>> {
        let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            current: RwLock::new((client_verifier(&pem, path)?, pem)),
        }))
    }

    /// Re-reads the CA file; swaps when its content changed and parses.
    pub fn reload(&self) -> Result<bool> {
        let pem = fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        if self.current.read().map(|c| c.1 == pem).unwrap_or(false) {
            return Ok(false);
        }
        let verifier = client_verifier(&pem, &self.path)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = (verifier, pem);
        }
        Ok(true)
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.current
            .read()
            .map(|c| c.0.clone())
            .map_err(|_| rustls::Error::General("client CA unavailable".into()))
    }

    /// Follows the CA file's directory, as the serving certificate's.
    pub fn spawn_reloader(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        filewatch::watch(&filewatch::dir_of(&self.path), POLL_INTERVAL, shutdown, move || match me.reload() {
            Ok(true) => tracing::info!(path = %me.path.display(), "client CA reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(path = %me.path.display(), error = %format!("{e:#}"), "client CA reload failed; keeping the current one")
            }
        });
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: they would have to outlive a reload. Clients send their certificate anyway
    /// (the API server's Go client sends its only one when the list is empty).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().map(|v| v.supported_verify_schemes()).unwrap_or_default()
    }
}

/// How long a replaced CA bundle is still trusted beside its successor. A rotation changes the
/// CA file of each client and the certificate of each server at different moments (the kubelet
/// syncs every pod's Secret volume on its own schedule): a client that already has the new CA
/// must still reach a server that has not switched yet.
pub const PREVIOUS_CA_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Trust in a server (Data Storage) by a CA bundle file that is rotated in place: each
/// handshake `stat`s the file and reloads it when it changed (handshakes are rare: connections
/// are pooled), so a re-issued CA is trusted without a restart. The bundle it replaced stays
/// trusted for `grace`; a file that does not load keeps the current bundle.
#[derive(Debug)]
pub struct ReloadingServerVerifier {
    path: PathBuf,
    grace: std::time::Duration,
    state: RwLock<ServerTrust>,
}

#[derive(Debug)]
struct ServerTrust {
    stamp: Option<Stamp>,
    pem: Vec<u8>,
    current: Arc<WebPkiServerVerifier>,
    previous: Option<(Arc<WebPkiServerVerifier>, std::time::Instant)>,
}

/// A verifier of servers by the CA certificates in `pem`, and when the first of them expires.
fn server_verifier(pem: &[u8], path: &Path) -> Result<(Arc<WebPkiServerVerifier>, i64)> {
    let mut roots = rustls::RootCertStore::empty();
    let mut not_after_min = i64::MAX;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.with_context(|| format!("reading {}", path.display()))?;
        not_after_min = not_after_min.min(not_after(cert.as_ref())?);
        roots.add(cert).with_context(|| format!("a CA certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in {}", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .with_context(|| format!("CA bundle {}", path.display()))?;
    Ok((verifier, not_after_min))
}

impl ReloadingServerVerifier {
    pub fn load(path: &Path) -> Result<Arc<Self>> {
        Self::load_with_grace(path, PREVIOUS_CA_GRACE)
    }

    pub fn load_with_grace(path: &Path, grace: std::time::Duration) -> Result<Arc<Self>> {
        let stamp = Stamp::of_blocking(path).ok();
        let pem = fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        let (current, not_after) = server_verifier(&pem, path)?;
        let me = Self {
            path: path.to_path_buf(),
            grace,
            state: RwLock::new(ServerTrust {
                stamp,
                pem,
                current,
                previous: None,
            }),
        };
        me.report_not_after(not_after);
        Ok(Arc::new(me))
    }

    fn report_not_after(&self, not_after: i64) {
        metrics::TRUSTED_CA_NOT_AFTER
            .with_label_values(&[&self.path.display().to_string()])
            .set(not_after as f64);
    }

    /// Re-reads the file when its stamp changed; swaps when the content changed and loads.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let stamp = Stamp::of_blocking(&self.path).ok();
        if self.state.read().map(|s| s.stamp == stamp).unwrap_or(false) {
            return Ok(false);
        }
        let pem = fs::read(&self.path).with_context(|| format!("reading CA file {}", self.path.display()))?;
        let Ok(mut state) = self.state.write() else {
            bail!("CA state unavailable");
        };
        state.stamp = stamp;
        if state.pem == pem {
            return Ok(false);
        }
        let (next, not_after) = server_verifier(&pem, &self.path)?;
        let replaced = std::mem::replace(&mut state.current, next);
        state.previous = Some((replaced, std::time::Instant::now()));
        state.pem = pem;
        drop(state);
        self.report_not_after(not_after);
        Ok(true)
    }

    /// The bundles trusted now: the current one, then the one it replaced while in its grace.
    fn trusted(&self) -> Result<Vec<Arc<WebPkiServerVerifier>>, rustls::Error> {
        match self.reload_if_changed() {
            Ok(true) => {
                metrics::TRUSTED_CA_RELOADS.with_label_values(&["success"]).inc();
                tracing::info!(path = %self.path.display(), "Data Storage CA bundle reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                metrics::TRUSTED_CA_RELOADS.with_label_values(&["failure"]).inc();
                tracing::warn!(path = %self.path.display(), error = %format!("{e:#}"), "Data Storage CA bundle reload failed; keeping the current one");
            }
        }
        let state = self
            .state
            .read()
            .map_err(|_| rustls::Error::General("CA bundle unavailable".into()))?;
        let mut trusted = vec![state.current.clone()];
        if let Some((previous, since)) = &state.previous {
            if since.elapsed() < self.grace {
                trusted.push(previous.clone());
            }
        }
        Ok(trusted)
    }

    fn current(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        self.state
            .read()
            .map(|s| s.current.clone())
            .map_err(|_| rustls::Error::General("CA bundle unavailable".into()))
    }
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut first_error = None;
        for verifier in self.trusted()? {
            match verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| rustls::Error::General("no trusted CA".into())))
    }

    // Signature checks depend on the algorithms, not on the roots: any bundle's verifier does.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().map(|v| v.supported_verify_schemes()).unwrap_or_default()
    }
}

/// A client TLS config (TLS 1.2/1.3, ALPN h2 and http/1.1) trusting servers by `verifier` only.
pub fn client_config(verifier: Arc<ReloadingServerVerifier>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS 1.2/1.3 only, ALPN h2 and http/1.1, certificate from the resolver.
pub fn server_config(resolver: Arc<ReloadingResolver>) -> Result<ServerConfig> {
    server_config_verifying_clients(resolver, None)
}

/// As [`server_config`]; with a verifier, only clients with a certificate its CA signed.
pub fn server_config_verifying_clients(
    resolver: Arc<ReloadingResolver>,
    clients: Option<Arc<ReloadingClientVerifier>>,
) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let mut config = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What the `certs` subcommand issues: into which directory, for which Service in which
/// namespace (plus extra names), valid how many days, and whether an existing CA is kept.
#[derive(Debug, Clone)]
pub struct IssueSettings {
    pub out_dir: PathBuf,
    pub service: String,
    pub namespace: String,
    pub extra_san: Vec<String>,
    pub days: u32,
    pub reuse_ca: bool,
}

/// What `certs` wrote.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Data Storage's serving certificate and key (in `<out_dir>/datastorage/`).
    pub datastorage_cert_pem: String,
    pub datastorage_key_pem: String,
}

/// The Data Storage Service's name; its serving certificate is issued for it in `--namespace`.
pub const DATASTORAGE_SERVICE: &str = "audit-guard-datastorage";
/// Where in `--out-dir` the Data Storage certificate goes (tls.crt, tls.key and a copy of ca.crt):
/// `audit-guard datastorage --tls-cert-dir <out>/datastorage`.
pub const DATASTORAGE_DIR: &str = "datastorage";

const CA_NAME: &str = "audit-guard development CA";

fn ca_params(days: u32) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, days);
    Ok(p)
}

fn set_validity(p: &mut CertificateParams, days: u32) {
    let ymd = |d: chrono::DateTime<Utc>| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let now = Utc::now();
    p.not_before = ymd(now - chrono::Duration::days(1));
    p.not_after = ymd(now + chrono::Duration::days(i64::from(days.max(1))));
}

/// The serving cert's names: the Service's two DNS names plus the extra ones.
pub fn serving_sans(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    for s in extra.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !sans.iter().any(|x| x == s) {
            sans.push(s.to_string());
        }
    }
    sans
}

/// Issues (or, with reuse_ca, keeps) a CA and a serving certificate in `settings.out_dir`.
pub fn issue(settings: &IssueSettings) -> Result<Issued> {
    let dir = &settings.out_dir;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key_path = dir.join("ca.key");
    let ca_key = if settings.reuse_ca && ca_key_path.exists() {
        KeyPair::from_pem(&fs::read_to_string(&ca_key_path)?).context("reading the existing ca.key")?
    } else {
        KeyPair::generate()?
    };
    let ca_pem_path = dir.join("ca.crt");
    // With reuse_ca the same key and name re-sign the CA, so the issued cert chains to the existing ca.crt.
    let ca_cert = ca_params(3650)?.self_signed(&ca_key)?;
    let ca_pem = if settings.reuse_ca && ca_pem_path.exists() {
        fs::read_to_string(&ca_pem_path)?
    } else {
        ca_cert.pem()
    };

    let (cert_pem, key_pem) = serving_leaf(&settings.service, settings, &ca_cert, &ca_key)?;
    let (datastorage_cert_pem, datastorage_key_pem) = serving_leaf(DATASTORAGE_SERVICE, settings, &ca_cert, &ca_key)?;
    let issued = Issued {
        ca_pem,
        cert_pem,
        key_pem,
        datastorage_cert_pem,
        datastorage_key_pem,
    };
    write_file(&ca_pem_path, issued.ca_pem.as_bytes(), 0o644)?;
    write_file(&ca_key_path, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(CERT_FILE), issued.cert_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(KEY_FILE), issued.key_pem.as_bytes(), 0o600)?;
    let ds = dir.join(DATASTORAGE_DIR);
    fs::create_dir_all(&ds).with_context(|| format!("creating {}", ds.display()))?;
    write_file(&ds.join(CERT_FILE), issued.datastorage_cert_pem.as_bytes(), 0o644)?;
    write_file(&ds.join(KEY_FILE), issued.datastorage_key_pem.as_bytes(), 0o600)?;
    write_file(&ds.join("ca.crt"), issued.ca_pem.as_bytes(), 0o644)?;
    Ok(issued)
}

/// A serving certificate for `service` in `settings.namespace` (plus the extra SANs), signed by the CA.
fn serving_leaf(service: &str, settings: &IssueSettings, ca_cert: &rcgen::Certificate, ca_key: &KeyPair) -> Result<(String, String)> {
    let mut leaf = CertificateParams::new(serving_sans(service, &settings.namespace, &settings.extra_san)).context("invalid SAN")?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{service}.{}.svc", settings.namespace));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf.use_authority_key_identifier_extension = true;
    set_validity(&mut leaf, settings.days);
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, ca_cert, ca_key)?;
    Ok((leaf_cert.pem(), leaf_key.serialize_pem()))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The webhook configurations' caBundle for a CA PEM.
pub fn ca_bundle(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem)
}

/// The `certs` subcommand.
pub fn generate(settings: &IssueSettings) -> Result<()> {
    let issued = issue(settings)?;
    eprintln!(
        "wrote ca.crt, ca.key, tls.crt, tls.key to {} for {}, and {DATASTORAGE_DIR}/tls.crt, tls.key, ca.crt for {}; caBundle:",
        settings.out_dir.display(),
        serving_sans(&settings.service, &settings.namespace, &settings.extra_san).join(", "),
        serving_sans(DATASTORAGE_SERVICE, &settings.namespace, &settings.extra_san).join(", ")
    );
    println!("{}", ca_bundle(&issued.ca_pem));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue_into(dir: &Path) -> Issued {
        issue(&IssueSettings {
            out_dir: dir.to_path_buf(),
            service: "audit-guard".into(),
            namespace: "audit-guard".into(),
            extra_san: vec!["localhost".into()],
            days: 30,
            reuse_ca: false,
        })
        .expect("issue certificates")
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("a certificate")
            .expect("valid PEM")
    }

    fn verifies(v: &ReloadingServerVerifier, cert: &CertificateDer<'_>) -> bool {
        let name = ServerName::try_from("localhost").expect("a name");
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now()).is_ok()
    }

    /// Replaces `path` the way a Secret update does: a new file moved over the old one.
    fn rotate(path: &Path, pem: &str) {
        let tmp = path.with_extension("new");
        fs::write(&tmp, pem).expect("write");
        fs::rename(&tmp, path).expect("rename");
    }

    #[test]
    fn a_rotated_ca_is_trusted_without_a_restart_and_its_predecessor_for_the_grace_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = issue_into(&dir.path().join("old"));
        let new = issue_into(&dir.path().join("new"));
        let (old_cert, new_cert) = (der(&old.datastorage_cert_pem), der(&new.datastorage_cert_pem));
        let ca = dir.path().join("ca.crt");
        fs::write(&ca, &old.ca_pem).expect("write");

        let within = ReloadingServerVerifier::load_with_grace(&ca, std::time::Duration::from_secs(3600)).expect("load");
        let past = ReloadingServerVerifier::load_with_grace(&ca, std::time::Duration::ZERO).expect("load");
        for v in [&within, &past] {
            assert!(verifies(v, &old_cert));
            assert!(!verifies(v, &new_cert), "a CA not in the file is not trusted");
        }

        rotate(&ca, &new.ca_pem);
        for v in [&within, &past] {
            assert!(
                verifies(v, &new_cert),
                "the new CA is trusted at the first handshake after the rotation"
            );
        }
        assert!(
            verifies(&within, &old_cert),
            "a server not yet re-issued is still reached in the grace"
        );
        assert!(!verifies(&past, &old_cert), "after the grace the replaced CA is no longer trusted");
    }

    #[test]
    fn a_ca_file_that_does_not_load_keeps_the_current_bundle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issued = issue_into(&dir.path().join("a"));
        let cert = der(&issued.datastorage_cert_pem);
        let ca = dir.path().join("ca.crt");
        fs::write(&ca, &issued.ca_pem).expect("write");
        let v = ReloadingServerVerifier::load_with_grace(&ca, std::time::Duration::ZERO).expect("load");
        let failures = metrics::TRUSTED_CA_RELOADS.with_label_values(&["failure"]).get();

        rotate(&ca, "half a certificate\n");
        assert!(verifies(&v, &cert), "the bundle in use survives a bad file");
        assert!(metrics::TRUSTED_CA_RELOADS.with_label_values(&["failure"]).get() > failures);
        assert!(ReloadingServerVerifier::load(&ca).is_err(), "but a start with it fails");

        rotate(&ca, &issued.ca_pem);
        assert!(verifies(&v, &cert));
    }
}
