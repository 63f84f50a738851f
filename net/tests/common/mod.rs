//! A server on 127.0.0.1 with probe, ingest-like and API-like routes, and raw-socket helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use kaudit_net::{HttpOptions, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stop and wait (bounded) for the server to return.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        result.expect("server did not stop within 5 s").unwrap().unwrap();
    }
}

fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(|| async { "metrics\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/v1/records", post(|body: Bytes| async move { format!("{} bytes\n", body.len()) }))
        .route("/api/v1/topics", get(|| async { "{\"topics\":[]}" }))
}

pub async fn start(options: &HttpOptions) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(kaudit_net::serve(listener, router(), options, async {
        let _ = stopped.await;
    }));
    Running { addr, stop: Some(stop), task }
}

pub fn limits(header_ms: u64, body_ms: u64, idle_ms: u64, max_connections: usize) -> Limits {
    Limits {
        max_connections,
        header_timeout: Duration::from_millis(header_ms),
        body_timeout: Duration::from_millis(body_ms),
        idle_timeout: Duration::from_millis(idle_ms),
    }
}

/// Read until `until` is in what was read, EOF, or `limit`; what was read and whether EOF came.
pub async fn read_until(stream: &mut TcpStream, until: Option<&str>, limit: Duration) -> (String, bool) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if until.is_some_and(|u| String::from_utf8_lossy(&out).contains(u)) {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// `GET path` on a fresh connection with `Connection: close`: the whole answer.
pub async fn get_raw(addr: SocketAddr, path: &str, limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut s, None, limit).await.0
}
