//! TLS for the Scylla session, with OpenSSL (the system's library).

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use scylla::client::session::{OpenSsl010Config, TlsContext};

use super::config::TlsOptions;

/// The session's TLS context from `options`; errors name the file that failed.
pub fn context(
    options: &TlsOptions,
) -> Result<TlsContext, Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(ca) = &options.ca_file {
        builder
            .set_ca_file(ca)
            .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
    }
    if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
        builder
            .check_private_key()
            .map_err(|e| format!("tls.key_file does not match tls.cert_file: {e}"))?;
    }
    if !options.verify {
        builder.set_verify(SslVerifyMode::NONE);
    }
    Ok(TlsContext::OpenSsl010Config(OpenSsl010Config::new(builder)))
}
