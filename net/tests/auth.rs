//! Bearer tokens over real sockets: 401/403/200 per role, rotation, probes, and config loading.

mod common;

use std::time::Duration;

use kaudit_net::{HttpConfig, HttpOptions, Role};
use reqwest::StatusCode;

const WRITE_A: &str = "write-token-aaaaaaaaaaaaaaaa";
const WRITE_B: &str = "write-token-bbbbbbbbbbbbbbbb";
const READ: &str = "read-token-cccccccccccccccccc";
const ADMIN: &str = "admin-token-dddddddddddddddd";

/// A config reading tokens from files and one variable, as an operator writes it.
fn config(dir: &std::path::Path, protect_probes: bool) -> HttpConfig {
    for (name, token) in [("write-a", WRITE_A), ("write-b", WRITE_B), ("read", READ)] {
        std::fs::write(dir.join(name), format!("  {token}\n")).unwrap();
    }
    // SAFETY: set once, before any thread reads it, to the same value in every test.
    unsafe { std::env::set_var("KAUDIT_NET_TEST_ADMIN_TOKEN", ADMIN) };
    let text = format!(
        r#"
        protect_probes = {protect_probes}
        [[tokens]]
        role = "write"
        file = "{d}/write-a"
        [[tokens]]
        role = "write"
        file = "{d}/write-b"
        [[tokens]]
        role = "read"
        file = "{d}/read"
        [[tokens]]
        role = "admin"
        env = "KAUDIT_NET_TEST_ADMIN_TOKEN"
        "#,
        d = dir.display()
    );
    let config: HttpConfig = toml::from_str(&text).unwrap();
    assert_eq!(config.validate("http"), vec![]);
    config
}

async fn status(http: &reqwest::Client, method: &str, url: String, token: Option<&str>) -> reqwest::Response {
    let mut request = match method {
        "POST" => http.post(url).body("{\"topic\":\"t\"}"),
        _ => http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn roles_rotation_and_open_probes() {
    let dir = tempfile::tempdir().unwrap();
    let options = config(dir.path(), false).build().unwrap();
    let server = common::start(&options).await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let post = |token| status(&http, "POST", format!("{base}/v1/records"), token);
    let get_api = |token| status(&http, "GET", format!("{base}/api/v1/topics"), token);

    let missing = post(None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer realm=\"kaudit\"");
    let wrong = post(Some("write-token-not-configured")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert_eq!(post(Some(WRITE_A)).await.status(), StatusCode::OK);
    assert_eq!(post(Some(WRITE_B)).await.status(), StatusCode::OK, "both write tokens work (rotation)");
    assert_eq!(post(Some(ADMIN)).await.status(), StatusCode::OK);
    let forbidden = post(Some(READ)).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert!(forbidden.text().await.unwrap().contains("needs a write or admin token"));

    assert_eq!(get_api(None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get_api(Some(READ)).await.status(), StatusCode::OK);
    assert_eq!(get_api(Some(ADMIN)).await.status(), StatusCode::OK);
    assert_eq!(get_api(Some(WRITE_A)).await.status(), StatusCode::FORBIDDEN);

    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(&http, "GET", format!("{base}{probe}"), None).await.status(), StatusCode::OK, "{probe}");
    }
    assert_eq!(status(&http, "GET", format!("{base}/elsewhere"), None).await.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn protected_probes_need_a_token_of_any_role() {
    let dir = tempfile::tempdir().unwrap();
    let options = config(dir.path(), true).build().unwrap();
    let server = common::start(&options).await;
    let http = reqwest::Client::new();
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let url = format!("http://{}{probe}", server.addr);
        assert_eq!(status(&http, "GET", url.clone(), None).await.status(), StatusCode::UNAUTHORIZED, "{probe}");
        assert_eq!(status(&http, "GET", url.clone(), Some(READ)).await.status(), StatusCode::OK, "{probe}");
        assert_eq!(status(&http, "GET", url, Some(WRITE_B)).await.status(), StatusCode::OK, "{probe}");
    }
    server.stop().await;
}

#[tokio::test]
async fn no_tokens_no_authentication() {
    let server = common::start(&HttpOptions::default()).await;
    let http = reqwest::Client::new();
    let answer = status(&http, "POST", format!("http://{}/v1/records", server.addr), None).await;
    assert_eq!(answer.status(), StatusCode::OK);
    server.stop().await;
}

#[test]
fn tokens_never_appear_in_debug() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), false);
    let options = config.build().unwrap().with_token(Role::Read, "inline-token-eeeeeeeeeeeeee");
    for shown in [format!("{config:?}"), format!("{options:?}"), format!("{options:#?}")] {
        for token in [WRITE_A, WRITE_B, READ, ADMIN, "inline-token-eeeeeeeeeeeeee"] {
            assert!(!shown.contains(token), "{token} in {shown}");
        }
    }
    assert!(format!("{options:?}").contains("read: ***"));
}

#[test]
fn bad_token_sources_are_config_issues_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short"), "abc\n").unwrap();
    let text = format!(
        r#"
        header_timeout_ms = 0
        max_connections = 0
        tls_cert_file = "{d}/cert.pem"
        [[tokens]]
        role = "write"
        env = "KAUDIT_NET_TEST_SURELY_UNSET"
        [[tokens]]
        role = "read"
        file = "{d}/absent"
        [[tokens]]
        role = "admin"
        [[tokens]]
        role = "read"
        file = "{d}/short"
        "#,
        d = dir.path().display()
    );
    let config: HttpConfig = toml::from_str(&text).unwrap();
    let issues: Vec<String> = config.validate("http").iter().map(|i| i.to_string()).collect();
    let at = |key: &str| issues.iter().any(|i| i.starts_with(&format!("{key}: ")));
    for key in [
        "http.max_connections",
        "http.header_timeout_ms",
        "http.tls_key_file",
        "http.tokens[0].env",
        "http.tokens[1].file",
        "http.tokens[2]",
        "http.tokens[3].file",
    ] {
        assert!(at(key), "no issue at {key}: {issues:#?}");
    }
    assert_eq!(issues.len(), 7, "{issues:#?}");
    assert!(issues.iter().any(|i| i.contains("KAUDIT_NET_TEST_SURELY_UNSET is not set")), "{issues:#?}");
    let unknown = toml::from_str::<HttpConfig>("[[tokens]]\nrole = \"write\"\ntoken = \"inline\"\n");
    assert!(unknown.unwrap_err().to_string().contains("unknown field `token`"));
    assert!(config.build().is_err());
}

#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let server = common::start(&HttpOptions::default()).await;
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(common::get_raw(server.addr, "/healthz", Duration::from_secs(2)).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
    let (_, eof) = common::read_until(&mut idle, None, Duration::from_secs(2)).await;
    assert!(eof, "idle connection left open after shutdown");
}
