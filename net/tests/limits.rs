//! Slow and idle clients over real sockets: half a header, half a body, idle keep-alive and a
//! crowd of idle connections past `max_connections`.

mod common;

use std::time::{Duration, Instant};

use kaudit_net::HttpOptions;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const HEADER_MS: u64 = 300;
const BODY_MS: u64 = 400;
const IDLE_MS: u64 = 700;

fn options() -> HttpOptions {
    HttpOptions { limits: common::limits(HEADER_MS, BODY_MS, IDLE_MS, 64), ..HttpOptions::default() }
}

/// Wait for EOF on `s` (at most 5 s) and return how long it took from `since`.
async fn closed_after(s: &mut TcpStream, since: Instant) -> (Duration, String) {
    let (read, eof) = common::read_until(s, None, Duration::from_secs(5)).await;
    assert!(eof, "still open after 5 s; read {read:?}");
    (since.elapsed(), read)
}

fn assert_near(took: Duration, ms: u64, what: &str) {
    let (low, high) = (Duration::from_millis(ms * 8 / 10), Duration::from_millis(ms + 1000));
    assert!(took >= low && took <= high, "{what}: closed after {took:?}, expected about {ms} ms");
}

#[tokio::test]
async fn half_a_header_is_closed_after_the_header_timeout() {
    let server = common::start(&options()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let (took, read) = closed_after(&mut s, started).await;
    assert_near(took, HEADER_MS, "half header");
    assert_eq!(read, "", "no answer to half a request");
    server.stop().await;
}

#[tokio::test]
async fn half_a_body_is_answered_408_after_the_body_timeout() {
    let server = common::start(&options()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (took, read) = closed_after(&mut s, started).await;
    assert_near(took, BODY_MS, "half body");
    assert!(read.starts_with("HTTP/1.1 408"), "{read}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_trickling_in_is_still_bounded() {
    let server = common::start(&options()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n").await.unwrap();
    let trickle = async {
        for _ in 0..100 {
            if s.write_all(b"0").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), trickle).await.ok();
    let (read, _) = common::read_until(&mut s, Some("408"), Duration::from_secs(2)).await;
    assert!(read.starts_with("HTTP/1.1 408"), "{read}");
    assert!(started.elapsed() < Duration::from_millis(BODY_MS + 3000));
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_and_silent_connections_are_closed_after_the_idle_timeout() {
    let server = common::start(&options()).await;
    let mut keep_alive = TcpStream::connect(server.addr).await.unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let connected = Instant::now();
    keep_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let (answer, eof) = common::read_until(&mut keep_alive, Some("ok\n"), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && !eof, "{answer}");
    let answered = Instant::now();
    // Longer than the header timeout: an idle keep-alive connection is not a slow header.
    tokio::time::sleep(Duration::from_millis(HEADER_MS + 100)).await;
    keep_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let (answer, _) = common::read_until(&mut keep_alive, Some("ok\n"), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "second request on the kept-alive connection: {answer}");
    let second = Instant::now();
    let (took, _) = closed_after(&mut keep_alive, second).await;
    assert_near(took, IDLE_MS, "idle keep-alive");
    assert!(answered.elapsed() > Duration::from_millis(IDLE_MS));
    let (took, _) = closed_after(&mut silent, connected).await;
    assert_near(took, IDLE_MS, "silent connection");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_past_max_connections_of_idle_clients() {
    let registry = prometheus::Registry::new();
    let options = HttpOptions { limits: common::limits(HEADER_MS, BODY_MS, 60_000, 16), ..HttpOptions::default() }
        .with_metrics(&registry)
        .unwrap();
    let server = common::start(&options).await;
    let mut crowd = Vec::new();
    for _ in 0..200 {
        crowd.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Half of them start a request and stall.
    for s in crowd.iter_mut().step_by(2) {
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    }
    let started = Instant::now();
    let answer = common::get_raw(server.addr, "/healthz", Duration::from_millis(HEADER_MS + 2000)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "healthz under 200 idle connections: {answer:?}");
    assert!(started.elapsed() < Duration::from_millis(HEADER_MS + 2000), "took {:?}", started.elapsed());
    let open = options.metrics.as_ref().unwrap().open.get();
    assert!(open <= 16, "{open} connections open with max_connections = 16");
    server.stop().await;
}
