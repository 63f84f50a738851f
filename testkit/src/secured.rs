//! A secured Kafka cluster for tests: librdkafka's mock cluster behind listeners that speak TLS
//! (optionally requiring a client certificate) and SASL/PLAIN, as a secured broker does.
//!
//! The mock cluster itself speaks plaintext only. In front of each mock broker a [`Listener`]
//! terminates TLS with a certificate signed by a CA made here, and, when SASL is on, answers the
//! SASL exchange of the Kafka protocol itself (`SaslHandshake` and `SaslAuthenticate`, after adding
//! both to the broker's `ApiVersions` answer, which the mock leaves out), refuses any other request
//! before authentication as a broker does, then relays bytes both ways. Each mock broker then
//! *advertises* its listener's port (`rd_kafka_mock_broker_set_host_port`), so metadata sends
//! clients to the secured listeners only: a client never reaches the plaintext ports unless told.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rdkafka::bindings::{rd_kafka_handle_mock_cluster, rd_kafka_mock_broker_set_host_port};
use rdkafka::producer::Producer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::QuickMockCluster;

/// What the listeners in front of the brokers demand.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Terminate TLS (clients use `SSL` or `SASL_SSL`).
    pub tls: bool,
    /// With `tls`: require a client certificate signed by the test CA (mutual TLS).
    pub client_certificates: bool,
    /// Require SASL/PLAIN with this user name and password.
    pub sasl_plain: Option<(String, String)>,
}

/// The PEM files a client needs, written to a directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

/// A mock cluster whose brokers are reachable only through secured listeners.
pub struct SecuredMockCluster {
    cluster: QuickMockCluster,
    bootstrap: String,
    security: Security,
    files: TlsFiles,
    listeners: Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Drop for SecuredMockCluster {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.listeners.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl SecuredMockCluster {
    /// `brokers` mock brokers behind listeners demanding `security`; the CA and a client
    /// certificate are written to `dir`.
    pub fn start(brokers: i32, security: Security, dir: &Path) -> Self {
        let cluster = QuickMockCluster::new(brokers).expect("mock cluster");
        let plain: Vec<SocketAddr> =
            cluster.bootstrap_servers().split(',').map(|a| a.parse().expect("host:port")).collect();
        let (files, server) = certificates(dir);
        let acceptor = security.tls.then(|| acceptor(&server, security.client_certificates.then_some(&files.ca)));
        let mut advertised = Vec::new();
        let mut fronts = Vec::new();
        for (broker, upstream) in (1..).zip(plain) {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("non-blocking listener");
            let port = listener.local_addr().expect("local addr").port();
            fronts.push((Front { upstream, acceptor: acceptor.clone(), sasl: security.sasl_plain.clone() }, listener));
            // SAFETY: the handle is valid while `cluster` lives; the call copies the host string
            // into the broker's advertised listener under the cluster's lock.
            unsafe {
                let mock = rd_kafka_handle_mock_cluster(cluster.owner().client().native_ptr());
                assert!(!mock.is_null());
                rd_kafka_mock_broker_set_host_port(mock, broker, c"127.0.0.1".as_ptr(), i32::from(port));
            }
            advertised.push(format!("127.0.0.1:{port}"));
        }
        // The listeners run on a thread of their own, so the cluster works from sync and async
        // tests alike; dropping the cluster stops them.
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                for (front, listener) in fronts {
                    tokio::spawn(front.serve(TcpListener::from_std(listener).expect("tokio listener")));
                }
                let _ = stopped.await;
            });
        });
        Self { cluster, bootstrap: advertised.join(","), security, files, listeners: Some((stop, thread)) }
    }

    /// The secured listeners, as `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster.create_topic(topic, partitions).expect("create topic");
    }

    pub fn tls_files(&self) -> &TlsFiles {
        &self.files
    }

    /// The librdkafka properties a client needs to pass these listeners (all but
    /// `bootstrap.servers`).
    pub fn client_options(&self) -> Vec<(&'static str, String)> {
        let s = &self.security;
        let protocol = match (s.tls, s.sasl_plain.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        };
        let mut options = vec![("security.protocol", protocol.to_string())];
        if s.tls {
            options.push(("ssl.ca.location", self.files.ca.display().to_string()));
        }
        if s.tls && s.client_certificates {
            options.push(("ssl.certificate.location", self.files.client_certificate.display().to_string()));
            options.push(("ssl.key.location", self.files.client_key.display().to_string()));
        }
        if let Some((user, password)) = &s.sasl_plain {
            options.push(("sasl.mechanisms", "PLAIN".to_string()));
            options.push(("sasl.username", user.clone()));
            options.push(("sasl.password", password.clone()));
        }
        options
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA; the
/// CA and the client's pair are written to `dir`. Returns the files and the server's (chain, key).
fn certificates(dir: &Path) -> (TlsFiles, (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "kaudit test Kafka CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");

    let server_key = KeyPair::generate().expect("key");
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    server_params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server = server_params.signed_by(&server_key, &ca, &ca_key).expect("server certificate");

    let client_key = KeyPair::generate().expect("key");
    let mut client_params = CertificateParams::new(Vec::new()).expect("params");
    client_params.distinguished_name.push(DnType::CommonName, "kaudit");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).expect("client certificate");

    let files = TlsFiles {
        ca: dir.join("kafka-ca.pem"),
        client_certificate: dir.join("kafka-client.pem"),
        client_key: dir.join("kafka-client.key"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write CA");
    std::fs::write(&files.client_certificate, client.pem()).expect("write client certificate");
    std::fs::write(&files.client_key, client_key.serialize_pem()).expect("write client key");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    (files, (vec![server.der().clone(), ca.der().clone()], key))
}

fn acceptor(
    (chain, key): &(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client_ca: Option<&PathBuf>,
) -> TlsAcceptor {
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(_) => {
            let mut roots = RootCertStore::empty();
            roots.add(chain[1].clone()).expect("CA into the root store");
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder(Arc::new(roots)).build().expect("client verifier"),
            )
        }
    };
    let config = builder.with_single_cert(chain.clone(), key.clone_key()).expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

/// One secured listener in front of one mock broker.
#[derive(Clone)]
struct Front {
    upstream: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    sasl: Option<(String, String)>,
}

impl Front {
    async fn serve(self, listener: TcpListener) {
        while let Ok((client, _)) = listener.accept().await {
            let front = self.clone();
            tokio::spawn(async move {
                if let Err(error) = front.connection(client).await {
                    tracing::debug!(%error, "secured listener: connection closed");
                }
            });
        }
    }

    async fn connection(self, client: TcpStream) -> std::io::Result<()> {
        match &self.acceptor {
            Some(acceptor) => {
                let client = acceptor.accept(client).await?;
                self.relay(client).await
            }
            None => self.relay(client).await,
        }
    }

    async fn relay<S: AsyncRead + AsyncWrite + Unpin>(&self, mut client: S) -> std::io::Result<()> {
        let mut broker = TcpStream::connect(self.upstream).await?;
        if let Some((user, password)) = &self.sasl {
            authenticate(&mut client, &mut broker, user, password).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut broker).await.map(|_| ())
    }
}

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// The broker's side of the SASL/PLAIN exchange: `ApiVersions` goes to the broker (and its answer
/// gains the two SASL APIs), `SaslHandshake` and `SaslAuthenticate` are answered here. Returns once
/// the client has authenticated; an error (the connection closes) on a wrong password or any other
/// request first.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    broker: &mut TcpStream,
    user: &str,
    password: &str,
) -> std::io::Result<()> {
    let mut raw_token_next = false;
    loop {
        let request = read_frame(client).await?;
        if raw_token_next {
            // SaslHandshake v0: the token comes as a bare frame, and success is an empty frame.
            if plain_token_matches(&request, user, password) {
                return write_frame(client, &[]).await;
            }
            return Err(refused("SASL/PLAIN: wrong user name or password"));
        }
        let header = RequestHeader::parse(&request)?;
        match header.api_key {
            API_VERSIONS => {
                write_frame(broker, &request).await?;
                let answer = read_frame(broker).await?;
                write_frame(client, &with_sasl_apis(&answer, header.api_version)?).await?;
            }
            SASL_HANDSHAKE => {
                let mechanism = read_string(&request, header.body_at)?;
                let mut answer = header.correlation_id.to_be_bytes().to_vec();
                let error = if mechanism == "PLAIN" { 0 } else { UNSUPPORTED_SASL_MECHANISM };
                answer.extend(error.to_be_bytes());
                answer.extend(1i32.to_be_bytes());
                answer.extend(5i16.to_be_bytes());
                answer.extend(b"PLAIN");
                write_frame(client, &answer).await?;
                if error != 0 {
                    return Err(refused("SASL: unsupported mechanism"));
                }
                raw_token_next = header.api_version == 0;
            }
            SASL_AUTHENTICATE => {
                let token = read_bytes(&request, header.body_at)?;
                let ok = plain_token_matches(token, user, password);
                let mut answer = header.correlation_id.to_be_bytes().to_vec();
                answer.extend(if ok { 0 } else { SASL_AUTHENTICATION_FAILED }.to_be_bytes());
                if ok {
                    answer.extend((-1i16).to_be_bytes());
                } else {
                    let message = b"Authentication failed: Invalid username or password";
                    answer.extend((message.len() as i16).to_be_bytes());
                    answer.extend(message);
                }
                answer.extend(0i32.to_be_bytes()); // auth_bytes: empty
                if header.api_version >= 1 {
                    answer.extend(0i64.to_be_bytes()); // session_lifetime_ms: none
                }
                write_frame(client, &answer).await?;
                return if ok { Ok(()) } else { Err(refused("SASL/PLAIN: wrong user name or password")) };
            }
            other => return Err(refused(&format!("request of type {other} before SASL authentication"))),
        }
    }
}

/// A PLAIN token is `authzid NUL authcid NUL password` (RFC 4616).
fn plain_token_matches(token: &[u8], user: &str, password: &str) -> bool {
    let mut parts = token.split(|b| *b == 0);
    let (_authzid, authcid, pass) = (parts.next(), parts.next(), parts.next());
    authcid == Some(user.as_bytes()) && pass == Some(password.as_bytes()) && parts.next().is_none()
}

/// The fields of a request header (v1 or v2) that the exchange needs.
struct RequestHeader {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    /// Where the request body starts (after client id; SASL requests are not flexible).
    body_at: usize,
}

impl RequestHeader {
    fn parse(frame: &[u8]) -> std::io::Result<Self> {
        let api_key = i16::from_be_bytes(take::<2>(frame, 0)?);
        let api_version = i16::from_be_bytes(take::<2>(frame, 2)?);
        let correlation_id = i32::from_be_bytes(take::<4>(frame, 4)?);
        let client_id_len = i16::from_be_bytes(take::<2>(frame, 8)?);
        let body_at = 10 + usize::try_from(client_id_len).unwrap_or(0);
        Ok(Self { api_key, api_version, correlation_id, body_at })
    }
}

/// The broker's `ApiVersions` answer with `SaslHandshake` (v0–1) and `SaslAuthenticate` (v0–1)
/// added, in the encoding of the request's version (v3 and later: compact array, tagged fields).
/// An answer carrying an error is passed as it is.
fn with_sasl_apis(answer: &[u8], version: i16) -> std::io::Result<Vec<u8>> {
    let error = i16::from_be_bytes(take::<2>(answer, 4)?);
    if error != 0 {
        return Ok(answer.to_vec());
    }
    let mut out = answer[..6].to_vec();
    let added = [SASL_HANDSHAKE, SASL_AUTHENTICATE];
    let (count, mut at) = if version >= 3 {
        let (n, len) = read_uvarint(answer, 6)?;
        let count = n.checked_sub(1).ok_or_else(|| refused("ApiVersions: null array"))? as usize;
        write_uvarint(&mut out, (count + added.len() + 1) as u64);
        (count, 6 + len)
    } else {
        let count = i32::from_be_bytes(take::<4>(answer, 6)?) as usize;
        out.extend(((count + added.len()) as i32).to_be_bytes());
        (count, 10)
    };
    let entry = if version >= 3 { 7 } else { 6 };
    let entries_end = at + count * entry;
    out.extend(answer.get(at..entries_end).ok_or_else(|| refused("ApiVersions: short answer"))?);
    at = entries_end;
    for api in added {
        out.extend(api.to_be_bytes());
        out.extend(0i16.to_be_bytes());
        out.extend(1i16.to_be_bytes());
        if version >= 3 {
            out.push(0); // no tagged fields
        }
    }
    out.extend(&answer[at..]);
    Ok(out)
}

fn read_uvarint(buf: &[u8], at: usize) -> std::io::Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in buf.get(at..).unwrap_or_default().iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(refused("bad varint"))
}

fn write_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_string(frame: &[u8], at: usize) -> std::io::Result<String> {
    let len = usize::try_from(i16::from_be_bytes(take::<2>(frame, at)?)).map_err(|_| refused("null string"))?;
    let bytes = frame.get(at + 2..at + 2 + len).ok_or_else(|| refused("short string"))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn read_bytes(frame: &[u8], at: usize) -> std::io::Result<&[u8]> {
    let len = usize::try_from(i32::from_be_bytes(take::<4>(frame, at)?)).map_err(|_| refused("null bytes"))?;
    frame.get(at + 4..at + 4 + len).ok_or_else(|| refused("short bytes"))
}

fn take<const N: usize>(buf: &[u8], at: usize) -> std::io::Result<[u8; N]> {
    buf.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or_else(|| refused("short frame"))
}

/// Frames this large are not SASL traffic; refuse rather than allocate.
const MAX_FRAME: usize = 1 << 20;

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(refused("frame too large before authentication"));
    }
    let mut frame = vec![0; len];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> std::io::Result<()> {
    stream.write_u32(frame.len() as u32).await?;
    stream.write_all(frame).await?;
    stream.flush().await
}

fn refused(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens() {
        assert!(plain_token_matches(b"\0kaudit\0secret", "kaudit", "secret"));
        assert!(plain_token_matches(b"admin\0kaudit\0secret", "kaudit", "secret"));
        assert!(!plain_token_matches(b"\0kaudit\0secrets", "kaudit", "secret"));
        assert!(!plain_token_matches(b"\0kaudit\0secret\0x", "kaudit", "secret"));
        assert!(!plain_token_matches(b"kaudit", "kaudit", "secret"));
    }

    #[test]
    fn api_versions_gain_the_sasl_apis_in_both_encodings() {
        // v2: correlation 7, error 0, [ApiVersions 0..2], throttle 0.
        let mut v2 = 7i32.to_be_bytes().to_vec();
        v2.extend([0, 0, 0, 0, 0, 1, 0, 18, 0, 0, 0, 2, 0, 0, 0, 0]);
        let out = with_sasl_apis(&v2, 2).unwrap();
        assert_eq!(&out[6..10], &3i32.to_be_bytes());
        assert_eq!(&out[16..22], &[0, 17, 0, 0, 0, 1]);
        assert_eq!(&out[22..28], &[0, 36, 0, 0, 0, 1]);
        assert_eq!(&out[28..], &[0, 0, 0, 0]);
        // v3: compact array (count + 1), a tagged-field byte per entry and at the end.
        let mut v3 = 7i32.to_be_bytes().to_vec();
        v3.extend([0, 0, 2, 0, 18, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]);
        let out = with_sasl_apis(&v3, 3).unwrap();
        assert_eq!(out[6], 4);
        assert_eq!(&out[14..21], &[0, 17, 0, 0, 0, 1, 0]);
        assert_eq!(&out[21..28], &[0, 36, 0, 0, 0, 1, 0]);
        assert_eq!(&out[28..], &[0, 0, 0, 0, 0]);
        // An error answer passes unchanged.
        let mut error = 7i32.to_be_bytes().to_vec();
        error.extend([0, 35, 0, 0, 0, 0]);
        assert_eq!(with_sasl_apis(&error, 3).unwrap(), error);
    }
}
