//! The shipped Prometheus rules and Grafana dashboard against real data: a real Prometheus (Debian's
//! `prometheus`) scrapes a running demo (its agents and its verifier), an ingest agent fed a few
//! records, and one agent that is down, evaluates `deploy/prometheus/kaudit-rules.yml`, and then
//! every PromQL expression of the dashboard and of the rules is run against it:
//! - each dashboard query and each recording rule returns data;
//! - each alerting rule's expression runs, and every series it reads exists (an alert's whole
//!   expression returns data only while it fires; the down agent makes `KauditAgentDown` fire,
//!   so the dashboard's firing-alerts panels have data too).
//!
//! The rules are loaded with their `for:` durations cut to 0 s: this test is about the expressions
//! and the metrics they read, not about how long a condition must hold (the rules' own unit tests,
//! `promtool test rules`, cover that).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, http, wait_ok};

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/kaudit-rules.yml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards/kaudit.json");

/// Grafana's variables as this test fills them: one topic of the demo, every tier, windows long
/// enough for a 1-s scrape interval.
fn fill_variables(expr: &str) -> String {
    expr.replace("$topic", "orders")
        .replace("$tier", ".*")
        .replace("$__rate_interval", "20s")
        .replace("$__range", "1m")
        .replace("$__interval", "5s")
}

/// The rules file with every `for:` set to 0 s.
fn rules_without_hold(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(RULES).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        match line.trim_start().strip_prefix("for:") {
            Some(_) => out.push_str(&format!("{}for: 0s\n", &line[..line.len() - line.trim_start().len()])),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    let path = dir.join("kaudit-rules.yml");
    std::fs::write(&path, out).unwrap();
    path
}

/// Prometheus's configuration: the demo's endpoint as an agent (its `kaudit_agent_*`) and as the
/// verifier (its `kaudit_verifier_*`), the ingest agent and a dead agent in job `kaudit-agent`.
fn prometheus_config(dir: &Path, rules: &Path, demo: u16, ingest: u16, dead: u16) -> std::path::PathBuf {
    let path = dir.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{rules}\"]\n\
             scrape_configs:\n\
             - job_name: kaudit-agent\n  static_configs: [{{targets: [\"127.0.0.1:{ingest}\", \"127.0.0.1:{dead}\"]}}]\n\
             - job_name: demo-agents\n  static_configs: [{{targets: [\"127.0.0.1:{demo}\"]}}]\n\
             \x20 relabel_configs: [{{target_label: job, replacement: kaudit-agent}}]\n\
             \x20 metric_relabel_configs: [{{source_labels: [__name__], regex: \"kaudit_verifier_.*\", action: drop}}]\n\
             - job_name: kaudit-verifier\n  static_configs: [{{targets: [\"127.0.0.1:{demo}\"]}}]\n\
             \x20 metric_relabel_configs: [{{source_labels: [__name__], regex: \"kaudit_agent_.*\", action: drop}}]\n",
            rules = rules.display()
        ),
    )
    .unwrap();
    path
}

/// One HTTP/1.0 GET (so the answer is never chunked): (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// `GET /api/v1/query`: Ok(number of series or samples) or Err(Prometheus's error).
fn query(port: u16, expr: &str) -> Result<usize, String> {
    let mut url = String::from("/api/v1/query?query=");
    for b in expr.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => url.push(b as char),
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    let (status, body) = get(port, &url).ok_or("Prometheus did not answer")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(match &v["data"]["result"] {
        serde_json::Value::Array(a) => a.len(),
        _ => 1, // a scalar or a string
    })
}

/// Every series name an expression reads: kaudit's metrics, recording rules (`level:metric:op`),
/// `up` and `ALERTS`. Label values and strings are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_string = false;
    let mut token = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
            token.clear();
            continue;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            token.push(c);
            continue;
        }
        let t = std::mem::take(&mut token);
        if !in_string && (t.starts_with("kaudit_") || t.contains(':') || t == "up" || t == "ALERTS") {
            names.insert(t);
        }
    }
    names
}

struct Rules {
    recorded: Vec<String>,
    alerts: Vec<(String, String)>,
}

/// The rules file's recording rule names and (alert name, expression) pairs.
fn rules() -> Rules {
    let text = std::fs::read_to_string(RULES).unwrap();
    let python = "import sys, yaml, json\n\
                  groups = yaml.safe_load(sys.stdin)['groups']\n\
                  print(json.dumps([r for g in groups for r in g['rules']]))";
    let mut child = Command::new("python3")
        .args(["-c", python])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (scripts/test.sh installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reading the rules: {}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let text_of = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    Rules {
        recorded: all.iter().filter(|r| r.get("record").is_some()).map(|r| text_of(&r["record"])).collect(),
        alerts: all
            .iter()
            .filter(|r| r.get("alert").is_some())
            .map(|r| (text_of(&r["alert"]), text_of(&r["expr"])))
            .collect(),
    }
}

/// Every `expr` of the dashboard's panels (rows included) and its variables' metric names.
fn dashboard() -> (Vec<(String, String)>, Vec<String>) {
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((p["title"].as_str().unwrap_or("?").to_string(), expr.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut exprs = Vec::new();
    walk(&d["panels"], &mut exprs);
    let variables = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["definition"].as_str())
        .map(|def| {
            let inner = def.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values(...)");
            let (selector, label) = inner.rsplit_once(',').unwrap();
            format!("count by ({}) ({})", label.trim(), fill_variables(selector.trim()))
        })
        .collect();
    (exprs, variables)
}

fn start_ingest_agent(dir: &Path, port: u16) -> Proc {
    let config = dir.join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\nagent_listen = \"127.0.0.1:{port}\"\n\
             [agent]\nname = \"ingest-php\"\nflush_interval = \"200ms\"\n[ingest]\n",
            db = dir.join("ingest.db").display(),
            data = dir.join("ingest").display()
        ),
    )
    .unwrap();
    let agent = common::kaudit("agent", &config, None);
    wait_ok(port, "/healthz", "ingest agent", Duration::from_secs(30));
    let now = common::now_ms();
    let records: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"topic":"orders","tier":"producer/php","business_id":"o-{i}","payload_xxh64":"{:016x}","bytes":100,"event_time":{now}}}"#,
                i * 7919
            )
        })
        .collect();
    let (status, body) = http(port, "POST", "/v1/records", &format!("[{}]", records.join(","))).unwrap();
    assert_eq!(status, 200, "{body}");
    agent
}

/// A loopback HTTP receiver answering 200 to everything, for the demo's webhook sink (so the
/// notification metrics have a sink); its URL.
fn webhook_receiver() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the headers and the body announced by Content-Length (the request is small).
            while let Ok(n @ 1..) = conn.read(&mut chunk) {
                request.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    url
}

/// The demo, and the port its verifier API and `/metrics` took (it takes another when the asked
/// one is busy: ports picked in advance can be taken by its own mock brokers, so it is read back).
fn start_demo(dir: &Path) -> (Proc, u16) {
    let hook = webhook_receiver();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["demo", "--duration", "40s", "--rate", "2000", "--bucket", "2s", "--faults-after", "2s"])
        .args(["--loss", "0.002", "--duplicates", "0.005", "--delay-ms", "1500"])
        .args(["--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap(), "--webhook", &hook])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The demo reports on stderr (stdout carries its final table).
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (found, port) = std::sync::mpsc::channel();
    let mut log = std::fs::File::create(dir.join("demo.log")).unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes());
            if let Some(rest) = line.split_once("/metrics on http://127.0.0.1:").map(|(_, r)| r) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = found.send(digits.parse::<u16>().unwrap());
            }
        }
    });
    let port = port.recv_timeout(Duration::from_secs(60)).expect("the demo printed its API address");
    (Proc(child), port)
}

/// `n` distinct free loopback ports (all bound at once, so no two are the same).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

#[test]
fn every_dashboard_and_rule_expression_runs_on_a_demo_scraped_by_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, demo_port) = start_demo(dir.path());
    let [ingest_port, dead, port] = free_ports();
    let _ingest = start_ingest_agent(dir.path(), ingest_port);
    let config = prometheus_config(dir.path(), &rules_without_hold(dir.path()), demo_port, ingest_port, dead);
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus must be installed (Debian package prometheus; scripts/test.sh installs it)"),
    );
    wait_ok(port, "/-/ready", "prometheus", Duration::from_secs(60));

    // Enough of the demo for every series: verdicts with loss and duplicates, the verifier's
    // missing/extra counters moving, latency judged, a rate window of samples.
    let started = Instant::now();
    let ready = [
        "kaudit_verifier_missing_messages_total > 0",
        "kaudit_verifier_extra_messages_total > 0",
        "kaudit_verifier_latency_seconds",
        "ALERTS{alertname=\"KauditAgentDown\", alertstate=\"firing\"}",
        "topic_tier:kaudit_loss_ratio:rate5m",
    ];
    while !ready.iter().all(|q| query(port, q).is_ok_and(|n| n > 0)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo's series did not all appear within 60 s: {:?}\ntargets: {:?}\ndemo:\n{}\nprometheus log:\n{}",
            ready.iter().map(|q| (q, query(port, q))).collect::<Vec<_>>(),
            get(port, "/api/v1/targets"),
            std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5)); // several scrapes after the first data everywhere

    let mut empty = Vec::new();
    let mut failed = Vec::new();
    let (exprs, variables) = dashboard();
    assert!(exprs.len() >= 30, "the dashboard's queries were found: {}", exprs.len());
    for (title, expr) in exprs
        .iter()
        .map(|(t, e)| (t.clone(), fill_variables(e)))
        .chain(variables.into_iter().map(|v| ("variable".into(), v)))
    {
        match query(port, &expr) {
            Ok(0) => empty.push(format!("dashboard {title}: {expr}")),
            Ok(_) => {}
            Err(e) => failed.push(format!("dashboard {title}: {expr}: {e}")),
        }
    }
    let rules = rules();
    assert!(rules.recorded.len() >= 5 && rules.alerts.len() >= 10, "rules found");
    for record in &rules.recorded {
        match query(port, record) {
            Ok(0) => empty.push(format!("recording rule {record}")),
            Ok(_) => {}
            Err(e) => failed.push(format!("recording rule {record}: {e}")),
        }
    }
    for (alert, expr) in &rules.alerts {
        if let Err(e) = query(port, expr) {
            failed.push(format!("alert {alert}: {expr}: {e}"));
        }
        for name in metric_names(expr) {
            match query(port, &format!("count({{__name__=\"{name}\"}})")) {
                Ok(0) => empty.push(format!("alert {alert} reads {name}, which has no series")),
                Ok(_) => {}
                Err(e) => failed.push(format!("alert {alert} reading {name}: {e}")),
            }
        }
    }
    drop(demo);
    assert!(failed.is_empty(), "expressions Prometheus refused:\n{}", failed.join("\n"));
    assert!(empty.is_empty(), "expressions that returned no data:\n{}", empty.join("\n"));
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        r#"sum by (job, le) (rate(kaudit_agent_flush_duration_seconds_bucket{job="kaudit-agent"}[5m])) / on (topic) topic_tier:kaudit_loss_ratio:rate5m and up == 0 or ALERTS{alertname=~"Kaudit.*"}"#,
    );
    let expected =
        ["ALERTS", "kaudit_agent_flush_duration_seconds_bucket", "topic_tier:kaudit_loss_ratio:rate5m", "up"];
    assert_eq!(names, expected.iter().map(|s| s.to_string()).collect());
}
