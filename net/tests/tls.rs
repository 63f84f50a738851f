//! HTTPS with certificates made here, a client trusting only their CA, and a reload when the
//! files are replaced (a bad file keeps the previous certificate).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use kaudit_net::HttpConfig;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA (PEM) and a certificate for 127.0.0.1 and localhost signed by it (PEM chain, PEM key).
fn issue(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("kaudit test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// Replace a file the way a certificate manager does: write aside, rename over.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A fresh client (so a fresh connection and handshake) trusting only `ca`.
fn client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn healthz(ca: &str, base: &str) -> Result<u16, String> {
    match client(ca).get(format!("{base}/healthz")).send().await {
        Ok(answer) => Ok(answer.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_that_follows_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (ca1, cert1, key1) = issue("one");
    let (ca2, cert2, key2) = issue("two");
    std::fs::write(&cert_path, &cert1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    let config = HttpConfig {
        tls_cert_file: Some(cert_path.clone()),
        tls_key_file: Some(key_path.clone()),
        ..HttpConfig::default()
    };
    assert_eq!(config.validate("http"), vec![]);
    let server = common::start(&config.build().unwrap()).await;
    let base = format!("https://{}", server.addr);

    assert_eq!(healthz(&ca1, &base).await, Ok(200));
    assert!(healthz(&ca2, &base).await.is_err(), "a client trusting another CA must fail");
    let plain = common::get_raw(server.addr, "/healthz", Duration::from_secs(3)).await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "plain HTTP answered on a TLS listener: {plain:?}");

    replace(&key_path, &key2);
    replace(&cert_path, &cert2);
    let started = Instant::now();
    while healthz(&ca2, &base).await != Ok(200) {
        assert!(started.elapsed() < Duration::from_secs(5), "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthz(&ca1, &base).await.is_err(), "the old certificate is still served");

    // A broken certificate file: logged, and the previous certificate stays.
    replace(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        assert_eq!(healthz(&ca2, &base).await, Ok(200));
    }
    server.stop().await;
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_a_config_issue() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert1, _) = issue("one");
    let (_, _, key2) = issue("two");
    std::fs::write(dir.path().join("tls.crt"), cert1).unwrap();
    std::fs::write(dir.path().join("tls.key"), key2).unwrap();
    let config = HttpConfig {
        tls_cert_file: Some(dir.path().join("tls.crt")),
        tls_key_file: Some(dir.path().join("tls.key")),
        ..HttpConfig::default()
    };
    let issues = config.validate("http");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "http.tls_cert_file");
    assert!(config.build().is_err());
}
