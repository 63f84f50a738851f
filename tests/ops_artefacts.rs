//! The ops artefacts (`deploy/`, `docker/`), checked by the tools that will read them: promtool,
//! amtool, kubernetes-validate, systemd-analyze, docker-compose, and `kaudit` itself for every
//! configuration file they carry. One test per artefact; each prints the tool's output when it
//! fails, and those whose tool could pass anything also show the tool refusing a broken copy.
//!
//! The tools come from PATH (`scripts/test.sh` installs them: promtool, amtool, systemd-analyze,
//! docker-compose from Debian, kubernetes-validate from PyPI, whose PyYAML and jsonschema the tests
//! also use through `python3` to read YAML). Nothing here touches the network beyond loopback.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KAUDIT: &str = env!("CARGO_BIN_EXE_kaudit");
/// The image's user (docker/Dockerfile, the Kubernetes manifests, kaudit.sysusers).
const IMAGE_UID: u32 = 10001;
/// The Kubernetes version the manifests are validated against. kubernetes-validate bundles the
/// schemas of 1.25 to 1.37, so no network is needed; the example app's native sidecar needs 1.29+.
const K8S_VERSION: &str = "1.30.0";
/// What a secret holds while a configuration is checked: long enough for a bearer token.
const PLACEHOLDER_SECRET: &str = "placeholder-secret-0123456789";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What `cmd` printed, for failure messages.
fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}\nexit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/test.sh installs the tools these tests use)"))
}

/// Run `cmd`; panic with its output unless it exits 0. Returns stdout and stderr together.
fn must_succeed(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "expected success:\n{}", describe(cmd, &out));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Run `cmd`; panic with its output unless it exits 0. Returns stdout alone.
fn stdout_of(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "expected success:\n{}", describe(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `cmd`; panic with its output if it exits 0 (shows a check can fail).
fn must_fail(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.status.success(), "expected a failure:\n{}", describe(cmd, &out));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every document of a YAML file, as JSON (PyYAML's safe loader: anchors and merge keys resolved).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let text = stdout_of(Command::new("python3").args(["-c", script]).arg(path));
    match serde_json::from_str(&text) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("{}: not YAML documents: {other:?}", path.display()),
    }
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: expected one YAML document", path.display());
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    array(v, pointer)
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("{pointer}: {s} is not a string")).into())
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Identifiers in a PromQL expression that name kaudit metrics (`kaudit_...`) or recording rules
/// (`level:metric:operations`); string literals and label values are skipped.
fn promql_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after_dollar = start > 0 && chars[start - 1] == '$';
            if !after_dollar && (word.starts_with("kaudit_") || word.contains(':')) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every metric name registered in the code: the string literals `"kaudit_..."` of the crates'
/// sources (metrics are registered by name in each crate's metrics.rs and the ingest server).
fn metric_names_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = read(&path);
                for piece in text.split("\"kaudit_").skip(1) {
                    let name: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if piece[name.len()..].starts_with('"') {
                        names.insert(format!("kaudit_{name}"));
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    for crate_dir in ["src", "agent/src", "verifier/src", "alerting/src", "net/src"] {
        walk(&repo().join(crate_dir), &mut names);
    }
    names
}

/// Recording rules defined in kaudit-rules.yml.
fn recording_rules() -> BTreeSet<String> {
    let rules = yaml(&repo().join("deploy/prometheus/kaudit-rules.yml"));
    array(&rules, "/groups")
        .iter()
        .flat_map(|g| array(g, "/rules"))
        .filter_map(|r| r.get("record").and_then(Value::as_str).map(String::from))
        .collect()
}

/// Names in `exprs` that are neither metrics of the code (histogram series by their base name)
/// nor recording rules of kaudit-rules.yml.
fn unknown_names<'a>(exprs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let (metrics, records) = (metric_names_in_code(), recording_rules());
    let known = |name: &str| {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        metrics.contains(name) || metrics.contains(base) || records.contains(name)
    };
    exprs.into_iter().flat_map(promql_names).filter(|n| !known(n)).collect()
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn readme_anchors() -> BTreeSet<String> {
    read(&repo().join("README.md"))
        .lines()
        .filter(|l| l.starts_with("## ") || l.starts_with("### "))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

// ------------------------------------------------------------------------------------ Prometheus

#[test]
fn prometheus_rules_pass_promtool_and_name_only_real_metrics() {
    let path = repo().join("deploy/prometheus/kaudit-rules.yml");
    let report = must_succeed(Command::new("promtool").args(["check", "rules"]).arg(&path));
    assert!(report.contains("SUCCESS"), "{report}");

    let rules = yaml(&path);
    let all: Vec<&Value> = array(&rules, "/groups").iter().flat_map(|g| array(g, "/rules")).collect();
    let anchors = readme_anchors();
    let mut alerts = 0;
    for rule in all.iter().filter(|r| r.get("alert").is_some()) {
        alerts += 1;
        let name = str_at(rule, "/alert");
        let severity = str_at(rule, "/labels/severity");
        assert!(["critical", "warning"].contains(&severity), "{name}: severity {severity:?}");
        for key in ["summary", "description", "runbook_url"] {
            assert!(!str_at(rule, &format!("/annotations/{key}")).trim().is_empty(), "{name}: empty {key}");
        }
        let runbook = str_at(rule, "/annotations/runbook_url");
        let target = runbook.strip_prefix("README.md#").unwrap_or_else(|| panic!("{name}: runbook_url {runbook}"));
        assert!(anchors.contains(target), "{name}: README.md has no section #{target}; sections: {anchors:?}");
    }
    assert!(alerts >= 10, "only {alerts} alerts");
    let unknown = unknown_names(all.iter().map(|r| str_at(r, "/expr")));
    assert!(unknown.is_empty(), "kaudit-rules.yml names metrics the code does not register: {unknown:?}");
    // The check can fail: a metric the code does not have is reported.
    assert_eq!(unknown_names(["rate(kaudit_agent_flushes_totl[5m])"]), vec!["kaudit_agent_flushes_totl"]);
}

#[test]
fn prometheus_rule_unit_tests_pass_and_cover_every_alert() {
    let dir = repo().join("deploy/prometheus");
    let report =
        must_succeed(Command::new("promtool").args(["test", "rules", "kaudit-rules.test.yml"]).current_dir(&dir));
    assert!(report.contains("SUCCESS"), "{report}");

    // Every alert has a test in which it fires and one in which it stays quiet.
    let tests = yaml(&dir.join("kaudit-rules.test.yml"));
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in array(&tests, "/tests").iter().flat_map(|t| array(t, "/alert_rule_test")) {
        let name = str_at(case, "/alertname").to_string();
        if array(case, "/exp_alerts").is_empty() {
            quiet.insert(name);
        } else {
            fires.insert(name);
        }
    }
    let rules = yaml(&dir.join("kaudit-rules.yml"));
    for rule in array(&rules, "/groups").iter().flat_map(|g| array(g, "/rules")) {
        if let Some(name) = rule.get("alert").and_then(Value::as_str) {
            assert!(fires.contains(name), "no test makes {name} fire");
            assert!(quiet.contains(name), "no test shows {name} quiet");
        }
    }
    let tested: BTreeSet<String> = array(&tests, "/tests")
        .iter()
        .flat_map(|t| array(t, "/promql_expr_test"))
        .flat_map(|t| promql_names(str_at(t, "/expr")))
        .collect();
    for record in recording_rules() {
        assert!(tested.contains(&record), "no promql_expr_test evaluates recording rule {record}");
    }

    // The tests can fail: the same tests against rules whose severities were changed.
    let broken = tempdir();
    let rules_text = read(&dir.join("kaudit-rules.yml")).replace("severity: critical", "severity: page");
    write(&broken.path().join("kaudit-rules.yml"), &rules_text);
    std::fs::copy(dir.join("kaudit-rules.test.yml"), broken.path().join("kaudit-rules.test.yml")).unwrap();
    let report =
        must_fail(Command::new("promtool").args(["test", "rules", "kaudit-rules.test.yml"]).current_dir(broken.path()));
    assert!(report.contains("FAILED"), "{report}");
}

#[test]
fn prometheus_config_passes_promtool_and_scrapes_both_jobs() {
    let path = repo().join("deploy/prometheus/prometheus.yml");
    let report = must_succeed(Command::new("promtool").args(["check", "config"]).arg(&path));
    assert!(report.contains("SUCCESS: 1 rule files found"), "{report}");
    let config = yaml(&path);
    let jobs: BTreeSet<&str> = array(&config, "/scrape_configs").iter().map(|j| str_at(j, "/job_name")).collect();
    assert_eq!(jobs, BTreeSet::from(["kaudit-agent", "kaudit-verifier"]));
    assert_eq!(strings(&config, "/rule_files"), ["kaudit-rules.yml"]);
}

// ---------------------------------------------------------------------------------- Alertmanager

#[test]
fn alertmanager_config_passes_amtool_and_routes_by_severity() {
    let path = repo().join("deploy/alertmanager/alertmanager.yml");
    let report = must_succeed(Command::new("amtool").arg("check-config").arg(&path));
    assert!(report.contains("SUCCESS"), "{report}");
    let config_flag = format!("--config.file={}", path.display());
    // Where alerts go, as the verifier's Alertmanager sink labels them and as the rules do.
    for (labels, receiver) in [
        (
            &["alertname=KauditLoss", "kind=loss", "topic=orders", "tier=broker", "severity=critical"][..],
            "kaudit-critical",
        ),
        (
            &["alertname=KauditLag", "kind=lag", "topic=orders", "tier=consumer/billing", "severity=warning"],
            "kaudit-warning",
        ),
        (&["alertname=KauditAgentSpoolGrowing", "instance=tap:9465", "severity=warning"], "kaudit-warning"),
        (&["alertname=KauditVerifierDown", "severity=critical"], "kaudit-critical"),
    ] {
        let verify = format!("--verify.receivers={receiver}");
        must_succeed(Command::new("amtool").args(["config", "routes", "test", &config_flag, &verify]).args(labels));
    }
    // The route test can fail.
    must_fail(Command::new("amtool").args([
        "config",
        "routes",
        "test",
        &config_flag,
        "--verify.receivers=kaudit-warning",
        "severity=critical",
    ]));
    let config = yaml(&path);
    let group_by: BTreeSet<String> = strings(&config, "/route/group_by").into_iter().collect();
    for label in ["topic", "tier", "kind"] {
        assert!(group_by.contains(label), "route.group_by lacks {label}: {group_by:?}");
    }
}

// --------------------------------------------------------------------------------------- Grafana

/// Every `expr` in a dashboard, panels inside rows included.
fn dashboard_exprs(panels: &[Value], out: &mut Vec<String>) {
    for panel in panels {
        for target in array(panel, "/targets") {
            out.push(str_at(target, "/expr").to_string());
        }
        dashboard_exprs(array(panel, "/panels"), out);
    }
}

#[test]
fn grafana_dashboard_queries_parse_and_use_known_metrics() {
    let path = repo().join("deploy/grafana/dashboards/kaudit.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("kaudit.json is JSON");
    let schema = dashboard["schemaVersion"].as_u64().unwrap();
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let vars: BTreeMap<&str, &Value> =
        array(&dashboard, "/templating/list").iter().map(|v| (str_at(v, "/name"), v)).collect();
    assert_eq!(str_at(vars["datasource"], "/type"), "datasource");
    assert_eq!(str_at(vars["datasource"], "/query"), "prometheus");
    for name in ["topic", "tier"] {
        assert_eq!(str_at(vars[name], "/type"), "query");
        assert!(str_at(vars[name], "/definition").starts_with("label_values("), "{name}");
        assert_eq!(str_at(vars[name], "/datasource/uid"), "${datasource}");
    }

    let mut exprs = Vec::new();
    dashboard_exprs(array(&dashboard, "/panels"), &mut exprs);
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    for panel in array(&dashboard, "/panels").iter().filter(|p| p["type"] != "row") {
        assert_eq!(str_at(panel, "/datasource/uid"), "${datasource}", "panel {}", panel["title"]);
    }
    for wanted in
        ["kaudit_verifier_cusum_statistic", "kaudit_loss_ratio", "kaudit_duplicate_ratio", "kaudit_agent_spool_bytes"]
    {
        assert!(exprs.iter().any(|e| e.contains(wanted)), "no panel shows {wanted}");
    }
    let unknown = unknown_names(exprs.iter().map(String::as_str));
    assert!(unknown.is_empty(), "the dashboard queries metrics the code does not register: {unknown:?}");

    // promtool parses every query, as a recording rule, with Grafana's variables filled in.
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$topic", ".+")
                .replace("$tier", ".+");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            serde_json::json!({ "record": format!("dashboard:query_{i}:expr"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempdir();
    // JSON is YAML: promtool reads the file as it is.
    write(&dir.path().join("dashboard-queries.yml"), &file.to_string());
    must_succeed(Command::new("promtool").args(["check", "rules"]).arg(dir.path().join("dashboard-queries.yml")));
    // The check can fail: a query promtool cannot parse.
    write(&dir.path().join("broken.yml"), &file.to_string().replace("sum by (", "sum by ((("));
    must_fail(Command::new("promtool").args(["check", "rules"]).arg(dir.path().join("broken.yml")));

    let datasources = yaml(&repo().join("deploy/grafana/provisioning/datasources/kaudit.yml"));
    assert_eq!(str_at(&datasources, "/datasources/0/type"), "prometheus");
    let providers = yaml(&repo().join("deploy/grafana/provisioning/dashboards/kaudit.yml"));
    assert_eq!(str_at(&providers, "/providers/0/type"), "file");
    assert_eq!(str_at(&providers, "/providers/0/options/path"), "/var/lib/grafana/dashboards/kaudit");
}

// ------------------------------------------------------------------------------------ Kubernetes

fn k8s_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn k8s_objects() -> Vec<(PathBuf, Value)> {
    k8s_manifests().into_iter().flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d))).collect()
}

fn kind(object: &Value) -> &str {
    str_at(object, "/kind")
}

/// Containers and init containers (native sidecars among them) of a workload.
fn containers(workload: &Value) -> Vec<&Value> {
    let spec = &workload["spec"]["template"]["spec"];
    array(spec, "/initContainers").iter().chain(array(spec, "/containers")).collect()
}

fn is_kaudit(container: &Value) -> bool {
    str_at(container, "/image").starts_with("kaudit:")
}

/// A JSON schema for the ServiceMonitor fields this repository uses, from the Prometheus
/// Operator's CRD (monitoring.coreos.com/v1): kubernetes-validate has no schema for custom
/// resources and only warns about them.
const SERVICE_MONITOR_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["apiVersion", "kind", "metadata", "spec"],
  "properties": {
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "ServiceMonitor"},
    "metadata": {"type": "object", "required": ["name"], "not": {"required": ["namespace"]}},
    "spec": {
      "type": "object",
      "required": ["selector", "endpoints"],
      "additionalProperties": false,
      "properties": {
        "jobLabel": {"type": "string"},
        "selector": {"type": "object", "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "namespaceSelector": {"type": "object"},
        "endpoints": {"type": "array", "minItems": 1, "items": {
          "type": "object",
          "additionalProperties": false,
          "properties": {
            "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
          },
          "required": ["port"]
        }}
      }
    }
  }
}"#;

fn validate_service_monitor(object: &Value) -> Output {
    let script = "import json, sys, jsonschema\n\
                  jsonschema.validate(json.loads(sys.argv[2]), json.loads(sys.argv[1]))";
    run(Command::new("python3").args(["-c", script, SERVICE_MONITOR_SCHEMA, &object.to_string()]))
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let files = k8s_manifests();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let report = must_succeed(
            Command::new("kubernetes-validate").args(["--kubernetes-version", K8S_VERSION, "--strict"]).arg(file),
        );
        assert!(!report.contains("ERROR"), "{report}");
    }
    // The validation can fail: the tap's Deployment with a field of the wrong type.
    let dir = tempdir();
    let broken = read(&repo().join("deploy/kubernetes/tap.yaml")).replace("replicas: 2", "replicas: two");
    write(&dir.path().join("tap.yaml"), &broken);
    must_fail(
        Command::new("kubernetes-validate")
            .args(["--kubernetes-version", K8S_VERSION, "--strict"])
            .arg(dir.path().join("tap.yaml")),
    );

    let objects = k8s_objects();
    let kinds: BTreeSet<&str> = objects.iter().map(|(_, o)| kind(o)).collect();
    for wanted in ["ConfigMap", "Deployment", "Service", "Secret", "ServiceMonitor", "PodDisruptionBudget"] {
        assert!(kinds.contains(wanted), "no {wanted} in deploy/kubernetes: {kinds:?}");
    }
    for (file, object) in &objects {
        assert!(object.pointer("/metadata/namespace").is_none(), "{}: namespaced {object}", file.display());
        if kind(object) == "ServiceMonitor" {
            let out = validate_service_monitor(object);
            assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
            let mut broken = object.clone();
            broken["spec"]["endpoints"][0]["interval"] = "soon".into();
            assert!(
                !validate_service_monitor(&broken).status.success(),
                "the ServiceMonitor schema took a bad interval"
            );
        }
    }
}

#[test]
fn kubernetes_workloads_are_hardened_and_use_existing_secrets() {
    let objects = k8s_objects();
    let secrets: BTreeMap<&str, &Value> = objects
        .iter()
        .filter(|(_, o)| kind(o) == "Secret")
        .map(|(_, o)| (str_at(o, "/metadata/name"), &o["stringData"]))
        .collect();
    let deployments: Vec<&Value> = objects.iter().map(|(_, o)| o).filter(|o| kind(o) == "Deployment").collect();
    assert!(deployments.len() >= 3, "tap, verifier and an example app");
    let mut kaudit_roles = BTreeSet::new();
    for deployment in deployments {
        let name = str_at(deployment, "/metadata/name");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], IMAGE_UID, "{name}");
        for c in containers(deployment) {
            let cname = format!("{name}/{}", str_at(c, "/name"));
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{cname}");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{cname}");
            assert!(c.pointer("/resources/requests/memory").is_some(), "{cname}: no memory request");
            assert!(c.pointer("/resources/limits/memory").is_some(), "{cname}: no memory limit");
            for env in array(c, "/env") {
                if let Some(secret) = env.pointer("/valueFrom/secretKeyRef") {
                    let (sname, key) = (str_at(secret, "/name"), str_at(secret, "/key"));
                    let data = secrets.get(sname).unwrap_or_else(|| panic!("{cname}: no Secret {sname}"));
                    assert!(data.get(key).is_some(), "{cname}: Secret {sname} has no key {key}");
                }
            }
            if !is_kaudit(c) {
                continue;
            }
            let args = strings(c, "/args");
            kaudit_roles.insert(args[0].clone());
            // The working directory is writable: a volume is mounted there.
            let workdir = str_at(c, "/workingDir");
            assert_eq!(workdir, "/var/lib/kaudit", "{cname}");
            assert!(array(c, "/volumeMounts").iter().any(|m| str_at(m, "/mountPath") == workdir), "{cname}: {workdir}");
            if args[0] != "migrate" {
                assert_eq!(str_at(c, "/livenessProbe/httpGet/path"), "/healthz", "{cname}");
                assert_eq!(str_at(c, "/readinessProbe/httpGet/path"), "/readyz", "{cname}");
            }
        }
    }
    assert!(kaudit_roles.contains("agent") && kaudit_roles.contains("verifier"), "{kaudit_roles:?}");
}

/// The file at `path` inside `container`: the ConfigMap key behind the volume mounted there.
fn config_map_file<'a>(objects: &'a [(PathBuf, Value)], workload: &Value, container: &Value, path: &str) -> &'a str {
    let mount = array(container, "/volumeMounts")
        .iter()
        .find(|m| path.starts_with(&format!("{}/", str_at(m, "/mountPath"))))
        .unwrap_or_else(|| panic!("nothing mounted at {path}"));
    let key = &path[str_at(mount, "/mountPath").len() + 1..];
    let volume_name = str_at(mount, "/name");
    let volume = array(&workload["spec"]["template"]["spec"], "/volumes")
        .iter()
        .find(|v| str_at(v, "/name") == volume_name)
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    let map_name = str_at(volume, "/configMap/name");
    let (_, map) = objects
        .iter()
        .find(|(_, o)| kind(o) == "ConfigMap" && str_at(o, "/metadata/name") == map_name)
        .unwrap_or_else(|| panic!("no ConfigMap {map_name}"));
    str_at(map, &format!("/data/{key}"))
}

/// `kaudit check-config` on `file` with nothing in the environment but `env` (and PATH).
fn check_config(file: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(KAUDIT);
    cmd.arg("check-config").arg(file).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

#[test]
fn kubernetes_config_maps_hold_real_kaudit_configs() {
    let objects = k8s_objects();
    let dir = tempdir();
    let mut checked = BTreeSet::new();
    for (_, workload) in objects.iter().filter(|(_, o)| kind(o) == "Deployment") {
        for c in containers(workload).into_iter().filter(|c| is_kaudit(c)) {
            let args = strings(c, "/args");
            let config = &args[args.iter().position(|a| a == "--config").expect("--config") + 1];
            let text = config_map_file(&objects, workload, c, config);
            let file = dir.path().join(format!("{}-{}.toml", str_at(workload, "/metadata/name"), str_at(c, "/name")));
            write(&file, text);
            // Only what the pod gives the container: a variable the config names but the pod
            // does not set fails the check.
            let env: Vec<(String, String)> = array(c, "/env")
                .iter()
                .map(|e| {
                    let value = e.get("value").and_then(Value::as_str).unwrap_or(PLACEHOLDER_SECRET);
                    (str_at(e, "/name").to_string(), value.to_string())
                })
                .collect();
            let report = must_succeed(&mut check_config(&file, &env));
            assert!(report.contains(": ok"), "{report}");
            // The container's command parses as well.
            must_succeed(Command::new(KAUDIT).args(&args).arg("--help"));
            checked.insert(text);
        }
    }
    let maps: Vec<&str> = objects
        .iter()
        .filter(|(_, o)| kind(o) == "ConfigMap")
        .flat_map(|(_, o)| o["data"].as_object().unwrap().iter())
        .filter(|(k, _)| k.ends_with(".toml"))
        .map(|(_, v)| v.as_str().unwrap())
        .collect();
    assert!(maps.len() >= 3, "tap, verifier and ingest configs");
    for text in maps {
        assert!(checked.contains(text), "a ConfigMap toml no kaudit container uses:\n{text}");
    }
    // The check can fail: the verifier's config without the variables its sinks name.
    let verifier = objects
        .iter()
        .find(|(_, o)| kind(o) == "ConfigMap" && str_at(o, "/metadata/name") == "kaudit-verifier")
        .map(|(_, o)| str_at(o, "/data/verifier.toml"))
        .unwrap();
    write(&dir.path().join("bare.toml"), verifier);
    must_fail(&mut check_config(&dir.path().join("bare.toml"), &[]));
}

// --------------------------------------------------------------------------------------- systemd

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let src = repo().join("deploy/systemd");
    let units = ["kaudit-verifier.service", "kaudit-agent@.service"];
    // systemd-analyze verify checks that ExecStart's program exists: point it at the binary cargo
    // built instead of /usr/local/bin/kaudit. It needs no running systemd (it works in a container).
    let dir = tempdir();
    for unit in units {
        let text = read(&src.join(unit));
        for directive in [
            "User=kaudit",
            "StateDirectory=kaudit",
            "WorkingDirectory=/var/lib/kaudit",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "Restart=on-failure",
            "EnvironmentFile=",
            "LimitNOFILE=",
            "ExecStart=/usr/local/bin/kaudit ",
        ] {
            assert!(text.lines().any(|l| l.starts_with(directive)), "{unit}: no {directive}");
        }
        write(&dir.path().join(unit), &text.replace("/usr/local/bin/kaudit ", &format!("{KAUDIT} ")));
    }
    // The template is checked as an instance, as systemctl would start it.
    for unit in ["kaudit-verifier.service", "kaudit-agent@.service", "kaudit-agent@tap-broker.service"] {
        let report = must_succeed(Command::new("systemd-analyze").args(["verify", unit]).current_dir(dir.path()));
        // verify exits 0 on unknown directives and bad values, printing a warning: none is allowed.
        assert!(report.trim().is_empty(), "systemd-analyze verify {unit}:\n{report}");
    }
    // Hardening, as systemd scores it (exposure 0-10, scaled by 10 for --threshold): at most 2.5
    // ("OK"); a unit without the hardening directives scores 9.6 ("UNSAFE") and fails.
    for unit in ["kaudit-verifier.service", "kaudit-agent@tap-broker.service"] {
        must_succeed(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--threshold=25", unit])
                .current_dir(dir.path()),
        );
    }
    write(&dir.path().join("bare.service"), &format!("[Service]\nExecStart={KAUDIT} verifier\n"));
    must_fail(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=25", "bare.service"])
            .current_dir(dir.path()),
    );
    // The check can fail: a misspelt directive is reported.
    let broken = read(&dir.path().join(units[0])).replace("ProtectSystem=strict", "ProtectSystm=strict");
    write(&dir.path().join("broken.service"), &broken);
    let report =
        must_succeed(Command::new("systemd-analyze").args(["verify", "broken.service"]).current_dir(dir.path()));
    assert!(report.contains("ProtectSystm"), "systemd-analyze took a misspelt directive:\n{report}");

    // The sysusers file creates user kaudit with the image's UID (in a scratch root).
    let root = tempdir();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    must_succeed(
        Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.path().display()))
            .arg(src.join("kaudit.sysusers")),
    );
    let passwd = read(&root.path().join("etc/passwd"));
    assert!(passwd.lines().any(|l| l.starts_with(&format!("kaudit:x:{IMAGE_UID}:{IMAGE_UID}:"))), "{passwd}");
}

// ------------------------------------------------------------------------------ Docker: compose

/// A container path mounted from the host, per the service's volumes (`host:container[:ro]`,
/// host paths relative to docker/).
fn host_path(service: &Value, container_path: &str) -> Option<PathBuf> {
    strings(service, "/volumes").iter().find_map(|v| {
        let mut parts = v.split(':');
        let (host, target) = (parts.next()?, parts.next()?);
        let host = repo().join("docker").join(host);
        match container_path.strip_prefix(target)? {
            "" => Some(host),
            rest => rest.strip_prefix('/').map(|rest| host.join(rest)),
        }
    })
}

/// The compose `environment:` of a service, `${VAR...}` interpolations replaced by placeholders.
fn compose_env(service: &Value) -> Vec<(String, String)> {
    service
        .get("environment")
        .and_then(Value::as_object)
        .map(|env| {
            env.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
                    (k.clone(), if v.starts_with("${") { PLACEHOLDER_SECRET.into() } else { v })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The binary cargo built for a program of the image.
fn workspace_bin(program: &str) -> &'static str {
    match program {
        "kaudit" => env!("CARGO_BIN_EXE_kaudit"),
        "kaudit-sample-app" => env!("CARGO_BIN_EXE_kaudit-sample-app"),
        "kaudit-mock-cluster" => env!("CARGO_BIN_EXE_kaudit-mock-cluster"),
        other => panic!("{other} is not a binary of the workspace"),
    }
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

#[test]
fn compose_file_validates_and_its_commands_and_mounts_are_real() {
    let docker = repo().join("docker");
    // docker-compose (v1, Python) validates the file against the Compose schema without an engine.
    must_succeed(
        Command::new("docker-compose")
            .args(["-f", "compose.yaml", "config", "-q"])
            .env("KAUDIT_API_TOKEN", PLACEHOLDER_SECRET)
            .env("KAUDIT_INGEST_TOKEN", PLACEHOLDER_SECRET)
            .current_dir(&docker),
    );
    let compose = yaml(&docker.join("compose.yaml"));
    let services = compose["services"].as_object().unwrap();
    let dir = tempdir();
    let mut tiers = BTreeMap::new();
    let mut rules = BTreeSet::new();
    for (name, service) in services {
        for volume in strings(service, "/volumes") {
            let host = docker.join(volume.split(':').next().unwrap());
            assert!(host.exists(), "{name}: mounts {} which does not exist", host.display());
        }
        for dependency in service
            .get("depends_on")
            .map(|d| match d {
                Value::Object(m) => m.keys().cloned().collect(),
                other => strings(other, ""),
            })
            .unwrap_or_default()
        {
            assert!(services.contains_key(&dependency), "{name} depends on unknown {dependency}");
        }
        if service.get("image").and_then(Value::as_str) != Some("kaudit:dev") {
            continue;
        }
        // A service of the kaudit image: its command parses, its config passes check-config.
        let program = strings(service, "/entrypoint").first().cloned().unwrap_or_else(|| "kaudit".into());
        let args = strings(service, "/command");
        must_succeed(Command::new(workspace_bin(&program)).args(&args).arg("--help"));
        let Some(config) = flag(&args, "--config") else { continue };
        let file = host_path(service, config).unwrap_or_else(|| panic!("{name}: {config} is not mounted"));
        let report = must_succeed(&mut check_config(&file, &compose_env(service)));
        assert!(report.contains(": ok"), "{report}");
        let parsed: toml::Value = toml::from_str(&read(&file)).unwrap();
        if let Some(topics) = parsed.get("agent").and_then(|a| a.get("topics")) {
            rules.insert(topics.to_string());
        }
        match (flag(&args, "--tier"), parsed.get("tap")) {
            (Some(tier), _) => tiers.insert(tier.to_string(), flag(&args, "--topic").unwrap().to_string()),
            (None, Some(tap)) => {
                tiers.insert(tap["tier"].as_str().unwrap().into(), tap["topics"][0].as_str().unwrap().into())
            }
            _ => None,
        };
        // Health checks: `kaudit health URL` parses, on the port the service listens on.
        let check = strings(service, "/healthcheck/test");
        if check.get(1).is_some_and(|p| p == "kaudit") {
            must_succeed(Command::new(KAUDIT).args(&check[2..]).arg("--help"));
            let listen = parsed.get("agent_listen").or_else(|| parsed.get("verifier").and_then(|v| v.get("listen")));
            let port = listen.and_then(toml::Value::as_str).and_then(|l| l.rsplit(':').next()).unwrap();
            assert!(check[3].contains(&format!(":{port}/healthz")), "{name}: health check {check:?} vs port {port}");
        }
    }
    // Every tier of the verifier's pipeline has a service counting it, on the pipeline's topic,
    // and all of them read business id and event time the same way.
    let verifier = &services["verifier"];
    let config = host_path(verifier, flag(&strings(verifier, "/command"), "--config").unwrap()).unwrap();
    let config: toml::Value = toml::from_str(&read(&config)).unwrap();
    let pipeline = &config["verifier"]["pipelines"][0];
    let wanted: Vec<&str> = pipeline["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pipeline["consumers"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    let topic = pipeline["topics"][0].as_str().unwrap();
    for tier in &wanted {
        assert_eq!(
            tiers.get(*tier).map(String::as_str),
            Some(topic),
            "tier {tier} of {topic}: services count {tiers:?}"
        );
    }
    assert_eq!(rules.len(), 1, "the stack's agents disagree on [[agent.topics]]: {rules:?}");

    // Prometheus: its mounted config, laid out as in the container, passes promtool (rules too).
    let prometheus = &services["prometheus"];
    for target in ["/etc/prometheus/prometheus.yml", "/etc/prometheus/kaudit-rules.yml"] {
        let host = host_path(prometheus, target).unwrap_or_else(|| panic!("prometheus: {target} not mounted"));
        std::fs::copy(&host, dir.path().join(Path::new(target).file_name().unwrap())).unwrap();
    }
    let report =
        must_succeed(Command::new("promtool").args(["check", "config", "prometheus.yml"]).current_dir(dir.path()));
    assert!(report.contains("SUCCESS: 1 rule files found"), "{report}");
    // Alertmanager and Grafana get the files deploy/ holds, where their images look.
    assert!(
        host_path(&services["alertmanager"], "/etc/alertmanager/alertmanager.yml")
            .is_some_and(|p| p.ends_with("deploy/alertmanager/alertmanager.yml"))
    );
    let grafana = &services["grafana"];
    assert!(host_path(grafana, "/etc/grafana/provisioning/dashboards/kaudit.yml").is_some_and(|p| p.exists()));
    assert!(host_path(grafana, "/etc/grafana/provisioning/datasources/kaudit.yml").is_some_and(|p| p.exists()));
    assert!(host_path(grafana, "/var/lib/grafana/dashboards/kaudit/kaudit.json").is_some_and(|p| p.exists()));

    // The command check can fail: an argument kaudit does not have.
    must_fail(Command::new(KAUDIT).args(["agent", "--confg", "/etc/kaudit/tap.toml", "--help"]));
}

// ------------------------------------------------------------------------------- Docker: image

/// The Dockerfile's instructions, continuation lines joined, comments dropped: (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&repo().join("docker/Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(&format!("{part} ")),
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// A JSON-form instruction argument (`["kaudit", "health", ...]`).
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("not exec form: {rest}: {e}"))
}

/// The bins of the workspace's packages, from cargo metadata.
fn workspace_bins() -> BTreeSet<String> {
    let text = stdout_of(
        Command::new(env!("CARGO"))
            .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
            .current_dir(repo()),
    );
    let metadata: Value = serde_json::from_str(&text).unwrap();
    array(&metadata, "/packages")
        .iter()
        .flat_map(|p| array(p, "/targets"))
        .filter(|t| strings(t, "/kind").iter().any(|k| k == "bin"))
        .map(|t| str_at(t, "/name").to_string())
        .collect()
}

#[test]
fn dockerfile_copies_real_files_and_builds_the_workspace_bins() {
    let steps = dockerfile();
    let ignored: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    for needed in ["target", ".git"] {
        assert!(ignored.iter().any(|i| i == needed), ".dockerignore does not keep {needed} out");
    }
    let first_build = steps.iter().position(|(i, r)| i == "RUN" && r.contains("cargo build")).expect("a cargo build");
    let mut cached_manifests = BTreeSet::new();
    for (i, (instruction, rest)) in steps.iter().enumerate().filter(|(_, (i, _))| i == "COPY") {
        if rest.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            let path = repo().join(source);
            assert!(path.exists(), "{instruction} {rest}: {source} does not exist");
            let source = source.trim_start_matches("./");
            assert!(
                !ignored.iter().any(|i| source == i || source.starts_with(&format!("{i}/"))),
                ".dockerignore drops {source}"
            );
            if i < first_build {
                cached_manifests.insert(source.to_string());
            }
        }
    }
    // The dependency-cache layer has every member's manifest, and the lock file.
    let root: toml::Value = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    for member in root["workspace"]["members"].as_array().unwrap() {
        let manifest = match member.as_str().unwrap() {
            "." => "Cargo.toml".to_string(),
            m => format!("{m}/Cargo.toml"),
        };
        assert!(cached_manifests.contains(&manifest), "the cache layer lacks {manifest}: {cached_manifests:?}");
    }
    assert!(cached_manifests.contains("Cargo.lock"));

    // The stand-in sources make a workspace cargo accepts as it is locked: run the cache layer's
    // RUN in a copy of those manifests, with `cargo build` replaced by `cargo metadata --locked`.
    let dir = tempdir();
    for manifest in &cached_manifests {
        write(&dir.path().join(manifest), &read(&repo().join(manifest)));
    }
    let script = format!(
        "cargo() {{ \"{}\" metadata --locked --offline --format-version 1 >/dev/null; }}\n{}",
        env!("CARGO"),
        steps[first_build].1
    );
    must_succeed(Command::new("sh").args(["-c", &script]).current_dir(dir.path()));

    // The binaries built and copied are the workspace's bins.
    let bins = workspace_bins();
    let built: BTreeSet<String> = steps[first_build]
        .1
        .split("--bin ")
        .skip(1)
        .map(|s| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect())
        .collect();
    assert!(built.contains("kaudit") && built.contains("kaudit-mock-cluster") && built.contains("kaudit-sample-app"));
    for bin in &built {
        assert!(bins.contains(bin), "{bin} is not a bin of the workspace: {bins:?}");
    }
    for (_, rest) in steps.iter().filter(|(i, r)| i == "COPY" && r.starts_with("--from=build")) {
        let words: Vec<&str> = rest.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            let name = Path::new(source).file_name().unwrap().to_str().unwrap();
            assert!(built.contains(name), "COPY --from=build {source}: not a binary the build stage builds");
        }
    }

    // The runtime stage: a numeric user, its working directory, the listeners' default ports.
    let runtime = &steps[steps.iter().rposition(|(i, _)| i == "FROM").unwrap()..];
    let value = |name: &str| {
        runtime.iter().find(|(i, _)| i == name).map(|(_, r)| r.as_str()).unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(value("FROM").starts_with("debian:bookworm-slim"));
    assert_eq!(value("USER"), format!("{IMAGE_UID}:{IMAGE_UID}"));
    assert_eq!(value("WORKDIR"), "/var/lib/kaudit");
    let apt = runtime.iter().find(|(i, r)| i == "RUN" && r.contains("apt-get install")).unwrap();
    for package in ["ca-certificates", "libssl3", "libsasl2-2", "libsasl2-modules-gssapi-mit"] {
        assert!(apt.1.contains(package), "the runtime image lacks {package}");
    }
    let exposed: BTreeSet<&str> = value("EXPOSE").split_whitespace().collect();
    for (file, default) in
        [("verifier/src/config.rs", "\"127.0.0.1:9464\""), ("src/config/mod.rs", "\"127.0.0.1:9465\"")]
    {
        assert!(read(&repo().join(file)).contains(default), "{file}: the default listener is no longer {default}");
        let port = default.trim_matches('"').rsplit(':').next().unwrap();
        assert!(exposed.contains(port), "EXPOSE {exposed:?} lacks {port}");
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The API token the image's default configuration reads from `KAUDIT_API_TOKEN` (`docker run -e`).
const IMAGE_API_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// `cmd` as the image runs it: in `workdir`, and as UID/GID 10001 when the test runs as root.
fn as_image_user(mut cmd: Command, workdir: &Path) -> Command {
    cmd.current_dir(workdir).env("KAUDIT_API_TOKEN", IMAGE_API_TOKEN);
    if running_as_root() {
        cmd.uid(IMAGE_UID).gid(IMAGE_UID);
    }
    cmd
}

#[test]
fn image_entrypoint_runs_as_its_user_in_its_working_directory() {
    let steps = dockerfile();
    let runtime = &steps[steps.iter().rposition(|(i, _)| i == "FROM").unwrap()..];
    let value = |name: &str| runtime.iter().rev().find(|(i, _)| i == name).map(|(_, r)| r.clone()).unwrap();
    let mut command = exec_form(&value("ENTRYPOINT"));
    command.extend(exec_form(&value("CMD")));
    assert_eq!(command[0], "kaudit");
    // Container paths the command names, mapped to the repository files the image copies there.
    let copies: Vec<(String, String)> = runtime
        .iter()
        .filter(|(i, r)| i == "COPY" && !r.starts_with("--from"))
        .map(|(_, r)| {
            let words: Vec<&str> = r.split_whitespace().collect();
            (words[0].to_string(), words[words.len() - 1].to_string())
        })
        .collect();
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| match copies.iter().find(|(_, target)| target == a) {
            Some((source, _)) => repo().join(source).display().to_string(),
            None => a.clone(),
        })
        .collect();
    let config = flag(&args, "--config").expect("the default command names its config").to_string();
    assert!(Path::new(&config).starts_with(repo()), "{config} is not a file the image copies");

    // WORKDIR: a scratch directory owned by the image's user.
    let workdir = tempdir();
    if running_as_root() {
        std::os::unix::fs::chown(workdir.path(), Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    }
    let mut version = as_image_user(Command::new(KAUDIT), workdir.path());
    assert!(must_succeed(version.arg("--version")).starts_with("kaudit "));
    let mut check = as_image_user(Command::new(KAUDIT), workdir.path());
    must_succeed(check.args(["check-config", &config]));
    // Its API is authenticated: without the token in the environment the config is refused.
    let mut open = as_image_user(Command::new(KAUDIT), workdir.path());
    let refused = run(open.env_remove("KAUDIT_API_TOKEN").args(["check-config", &config]));
    assert_eq!(refused.status.code(), Some(78), "{}", describe(&open, &refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("KAUDIT_API_TOKEN"), "{}", describe(&open, &refused));

    // The default command itself, listening on loopback on a free port instead of 0.0.0.0:9464.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let logs = tempdir();
    let log = logs.path().join("verifier.log");
    let mut cmd = as_image_user(Command::new(KAUDIT), workdir.path());
    cmd.args(&args).args(["--listen", &format!("127.0.0.1:{port}")]);
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let mut child = common::Proc(cmd.spawn().unwrap());
    // The image's HEALTHCHECK, pointed at that port, says healthy within 30 s.
    let healthcheck = value("HEALTHCHECK");
    let probe = exec_form(healthcheck.split_once("CMD ").unwrap().1);
    assert_eq!(probe[..2], ["kaudit", "health"]);
    let url = probe[2].replace(":9464/", &format!(":{port}/"));
    assert_ne!(url, probe[2], "the health check does not probe port 9464");
    let started = Instant::now();
    loop {
        let mut health = as_image_user(Command::new(KAUDIT), workdir.path());
        let out = run(health.arg("health").arg(&url).args(&probe[3..]));
        if out.status.success() {
            break;
        }
        let why = || format!("{}\n--- verifier log\n{}", describe(&health, &out), read(&log));
        assert!(started.elapsed() < Duration::from_secs(30), "never healthy:\n{}", why());
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.terminate();
    assert!(status.success(), "the verifier stopped with {status}:\n{}", read(&log));
    // Relative paths (data_dir "kaudit-data", the default SQLite store) landed in WORKDIR, as its user.
    let db = workdir.path().join("kaudit-data/audit.db");
    let meta = std::fs::metadata(&db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    if running_as_root() {
        assert_eq!(meta.uid(), IMAGE_UID, "{} belongs to {}", db.display(), meta.uid());
    }
}
