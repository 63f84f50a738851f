//! Helpers shared by the cross-process tests: child processes, the mock cluster helper binary,
//! plain HTTP/1.1 over loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then the exit status (within 30 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `kaudit-mock-cluster --topic SPEC` in its own process: (process, its stdin (closing it stops
/// the cluster), bootstrap servers).
pub fn mock_cluster(topic: &str) -> (Proc, ChildStdin, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaudit-mock-cluster"))
        .args(["--topic", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let bootstrap = line.trim().strip_prefix("BOOTSTRAP=").expect("bootstrap line").to_string();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    (Proc(child), stdin, bootstrap)
}

/// `kaudit <command> --config FILE` as a child process, stderr to `log` when given.
pub fn kaudit(command: &str, config: &Path, log: Option<&Path>) -> Proc {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    Proc(
        Command::new(env!("CARGO_BIN_EXE_kaudit"))
            .args([command, "--config", config.to_str().unwrap()])
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// One HTTP/1.1 request: (status, body); `None` when nothing listens.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// Wait until `GET path` answers 200.
pub fn wait_ok(port: u16, path: &str, what: &str, limit: Duration) {
    let started = Instant::now();
    while http(port, "GET", path, "").is_none_or(|(status, _)| status != 200) {
        assert!(started.elapsed() < limit, "{what} not ready on {port}{path} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
