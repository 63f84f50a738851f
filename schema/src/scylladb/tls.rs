//! TLS for the Scylla session, with OpenSSL (the system's library).

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use scylla::client::session::{OpenSsl010Config, TlsContext};

use super::config::TlsOptions;

/// The session's TLS context from `options`; errors name the file that failed.
pub fn context(options: &TlsOptions) -> Result<TlsContext, Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(ca) = &options.ca_file {
        builder.set_ca_file(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
    }
    if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
        builder.set_certificate_chain_file(cert).map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
        builder.check_private_key().map_err(|e| format!("tls.key_file does not match tls.cert_file: {e}"))?;
    }
    if !options.verify {
        builder.set_verify(SslVerifyMode::NONE);
    }
    Ok(TlsContext::OpenSsl010Config(OpenSsl010Config::new(builder)))
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};

    use super::*;

    /// A self-signed certificate and its key, as PEM files in `dir`.
    fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "kaudit-test").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.build().to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn builds_a_mutual_tls_context_from_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let options =
            TlsOptions { ca_file: Some(cert.clone()), cert_file: Some(cert), key_file: Some(key), verify: true };
        assert!(matches!(context(&options), Ok(TlsContext::OpenSsl010Config(_))));
    }

    #[test]
    fn a_bad_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed(dir.path());
        let missing =
            TlsOptions { ca_file: Some(dir.path().join("nope.pem")), cert_file: None, key_file: None, verify: true };
        assert!(context(&missing).err().unwrap().to_string().starts_with("tls.ca_file"));
        let other_key = dir.path().join("other.pem");
        std::fs::write(
            &other_key,
            PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap().private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let mismatched = TlsOptions { ca_file: None, cert_file: Some(cert), key_file: Some(other_key), verify: false };
        let err = context(&mismatched).err().unwrap().to_string();
        assert!(err.starts_with("tls.key_file"), "{err}");
    }
}
