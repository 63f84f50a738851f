//! librdkafka as kaudit builds it (rdkafka's `ssl` and `gssapi` features) accepts the settings of a
//! secured cluster: TLS, and SASL PLAIN, SCRAM, OAUTHBEARER and GSSAPI over TLS. Without OpenSSL at build time
//! creating these clients fails (`OpenSSL not available at build time`, `No provider for SASL
//! mechanism`). The clients are created, never connected: no broker listens on port 9.

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

/// A CA certificate (PEM) made here, written to `dir`, as `ssl.ca.location` takes it.
fn ca_file(dir: &std::path::Path) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "kaudit test Kafka CA");
    let path = dir.join("ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path.to_str().unwrap().to_string()
}

fn secured(protocol: &str, mechanism: Option<&str>, ca: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", "127.0.0.1:9")
        .set("group.id", "kaudit-secured-test")
        .set("security.protocol", protocol)
        .set("ssl.ca.location", ca);
    if let Some(mechanism) = mechanism {
        c.set("sasl.mechanisms", mechanism);
        if mechanism == "OAUTHBEARER" {
            c.set("enable.sasl.oauthbearer.unsecure.jwt", "true").set("sasl.oauthbearer.config", "principal=kaudit");
        } else {
            c.set("sasl.username", "kaudit").set("sasl.password", "secret");
        }
    }
    c
}

#[test]
fn tls_and_sasl_mechanisms_are_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    let cases = [
        ("SSL", None),
        ("SASL_SSL", Some("PLAIN")),
        ("SASL_SSL", Some("SCRAM-SHA-256")),
        ("SASL_SSL", Some("SCRAM-SHA-512")),
        ("SASL_SSL", Some("OAUTHBEARER")),
        ("SASL_PLAINTEXT", Some("SCRAM-SHA-512")),
    ];
    for (protocol, mechanism) in cases {
        let created = secured(protocol, mechanism, &ca).create::<BaseConsumer>();
        if let Err(error) = created {
            panic!("security.protocol={protocol} sasl.mechanisms={mechanism:?}: {error}");
        }
    }
}

/// The CA file is really read: a missing one fails, so the cases above exercised OpenSSL.
#[test]
fn a_missing_ca_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let created = secured("SSL", None, missing.to_str().unwrap()).create::<BaseConsumer>();
    let error = created.err().expect("a missing ssl.ca.location must fail").to_string();
    assert!(error.contains("ssl.ca.location") || error.contains("no-such-ca.pem"), "{error}");
}

/// GSSAPI (Kerberos) is built in through the system cyrus-sasl. Re-login is off so that no `kinit`
/// runs; a build without cyrus-sasl fails here with `No provider for SASL mechanism GSSAPI`.
#[test]
fn gssapi_is_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    let mut config = secured("SASL_SSL", Some("GSSAPI"), &ca);
    config.set("sasl.kerberos.service.name", "kafka").set("sasl.kerberos.min.time.before.relogin", "0");
    if let Err(error) = config.create::<BaseConsumer>() {
        panic!("GSSAPI: {error}");
    }
}
