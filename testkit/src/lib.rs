//! Test support shared by kaudit's crates.
//!
//! [`CqlServer`] serves one in-memory `KassandraSession` (a real CQL protocol server, from the
//! `kassandra` crate that `kassandra-tester` re-exports) on a loopback port. Unlike
//! `KassandraTester::in_scope`, it can be stopped, which closes the listener and every client
//! connection, and started again on the same port with the same data, like a node restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use futures_util::{SinkExt, StreamExt};
use kassandra_tester::kassandra::error::DbError;
use kassandra_tester::kassandra::frame::request::Request;
use kassandra_tester::kassandra::frame::response::Response;
use kassandra_tester::kassandra::frame::response::error::Error;
use kassandra_tester::kassandra::frame::{request_stream, response_sink};
use kassandra_tester::kassandra::session::KassandraSession;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

mod kafka;
mod secured;
pub use kafka::QuickMockCluster;
pub use secured::{SecuredMockCluster, Security, TlsFiles};

/// An in-process CQL server on 127.0.0.1.
pub struct CqlServer {
    session: Arc<Mutex<KassandraSession>>,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl CqlServer {
    /// Start on a free loopback port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"))
    }

    /// Start on `addr` (a fixed port, for tests that restart the server).
    pub fn start_on(addr: SocketAddr) -> Self {
        assert!(addr.ip().is_loopback(), "test servers listen on loopback only");
        let mut server = Self { session: Arc::new(Mutex::new(KassandraSession::new())), addr, running: None };
        server.restart();
        server
    }

    /// `host:port` for a store URL or driver.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stop serving: the listener and every open connection close. Data is kept.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().expect("cql server thread panicked");
        }
    }

    /// Serve again on the same address, with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let std_listener = bind_with_retry(self.addr);
        self.addr = std_listener.local_addr().expect("bound address");
        let session = self.session.clone();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("cql-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, session) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task, closing their sockets.
                runtime.shutdown_background();
            })
            .expect("spawn cql server thread");
        self.running = Some((stop, thread));
    }
}

impl Drop for CqlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_with_retry(addr: SocketAddr) -> std::net::TcpListener {
    // A port just released can take a moment to be free again.
    let mut last = None;
    for _ in 0..100 {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true).expect("non-blocking listener");
                return l;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("cannot bind {addr}: {last:?}");
}

async fn accept_loop(listener: TcpListener, session: Arc<Mutex<KassandraSession>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, session.clone()));
            }
            Err(error) => tracing::warn!(%error, "cql server accept failed"),
        }
    }
}

async fn serve(mut stream: TcpStream, session: Arc<Mutex<KassandraSession>>) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut responses = response_sink(&mut write);
    while let Some(frame) = requests.next().await {
        let Ok((header, opcode, body)) = frame else {
            break;
        };
        let response = match Request::deserialize(opcode, &body, header.flags) {
            Ok(request) => answer(&session, request),
            Err(error) => {
                tracing::warn!(?error, ?opcode, "cannot parse cql request");
                Response::Error(Error::new(DbError::ProtocolError, "cannot parse request"))
            }
        };
        if responses.send((response, header.stream)).await.is_err() {
            break;
        }
    }
}

fn answer(session: &Mutex<KassandraSession>, request: Request<'_>) -> Response {
    let mut session = session.lock().expect("cql session poisoned");
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::AuthResponse => {
            return Response::Error(Error::new(DbError::ProtocolError, "authentication is not supported"));
        }
        Request::Query(query) => session.process(query),
        Request::Prepare(prepare) => session.prepare(prepare),
        Request::Execute(execute) => session.execute(execute),
        Request::Batch(batch) => session.process_batch(batch),
    };
    match result {
        Ok(r) => Response::Result(r),
        Err(e) => Response::Error(e),
    }
}

/// Run `promtool check metrics` (Debian package `prometheus`; `scripts/test.sh` installs it) on a
/// Prometheus text exposition: whether it passed, and what promtool said.
pub fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`; scripts/test.sh installs it)");
    child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
