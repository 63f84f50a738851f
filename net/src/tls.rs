//! TLS with a certificate that follows its files. [`CertReloader`] is rustls's certificate
//! resolver: on a handshake, at most once per [`CHECK_EVERY`], it compares the files' size and
//! modification time with those it loaded and re-reads them when they differ; SIGHUP forces a
//! re-read. A pair that does not load (half-written, key not matching) is logged once per change
//! and the previous certificate stays in use, so a bad rotation never takes the listener down.
//!
//! rustls with the ring provider: no system library needed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// How often a handshake may look at the files.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No `CERTIFICATE` block in the certificate file.
    #[error("{0}: no PEM certificate")]
    NoCertificate(String),
    /// No usable private key in the key file.
    #[error("{path}: no PEM private key ({reason})")]
    NoKey { path: String, reason: String },
    /// rustls refused the pair (unsupported key type, key not matching the certificate).
    #[error("{cert} with {key}: {source}")]
    Refused {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
}

/// Size and modification time of both files: what a change is detected by.
type Stamp = [(u64, Option<SystemTime>); 2];

struct Current {
    key: Arc<CertifiedKey>,
    /// The stamp last looked at (loaded, or failed and logged).
    stamp: Stamp,
    checked: Instant,
}

/// A certificate resolver that re-reads its PEM files when they change.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Current>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

fn provider() -> CryptoProvider {
    ring::default_provider()
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None));
    [one(cert), one(key)]
}

/// Read and check a certificate chain and its key.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.display().to_string(), source });
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::NoKey { path: key.display().to_string(), reason: e.to_string() })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|source| TlsError::Refused {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    })
}

impl CertReloader {
    /// Load `cert` and `key`; an error if they do not make a usable pair.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let loaded = load_pair(cert, key)?;
        let current = Current { key: Arc::new(loaded), stamp, checked: Instant::now() };
        Ok(Self { cert: cert.to_path_buf(), key: key.to_path_buf(), current: Mutex::new(current) })
    }

    /// Re-read the files now (SIGHUP); on error the previous certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamp(&self.cert, &self.key);
        let result = load_pair(&self.cert, &self.key);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.stamp = stamp;
        current.checked = Instant::now();
        current.key = Arc::new(result?);
        Ok(())
    }

    /// [`CertReloader::reload`], logging the outcome.
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded"),
            Err(error) => tracing::warn!(%error, "cannot reload the TLS certificate; keeping the previous one"),
        }
    }

    /// Re-read the files if they changed, looking at most once per [`CHECK_EVERY`].
    fn refresh(&self) {
        {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.checked.elapsed() < CHECK_EVERY {
                return;
            }
            current.checked = Instant::now();
            if stamp(&self.cert, &self.key) == current.stamp {
                return;
            }
        }
        self.reload_logged();
    }

    /// The certificate in use.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).key.clone()
    }

    /// A TLS acceptor (HTTP/1.1 over ALPN) resolving certificates through `self`.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.certified_key())
    }
}
