//! What every kaudit process serves on `/metrics` beside its own metrics: `kaudit_build_info`
//! (always 1; labels `version`, `git_sha`, `rustc`: which build is running, for dashboards and
//! for spotting a fleet half upgraded) and the standard `process_*` metrics of the Prometheus
//! client (CPU seconds, resident and virtual memory, open and maximum file descriptors, threads,
//! start time; Linux only). `kaudit agent`, `kaudit verifier` and `kaudit demo` each register
//! them once, in the registry their `/metrics` serves.

use prometheus::{IntGauge, Opts, Registry};

/// The crate's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built, `unknown` without git (see `build.rs`).
pub const GIT_SHA: &str = env!("KAUDIT_GIT_SHA");
/// The compiler's version, `unknown` if it could not be asked.
pub const RUSTC: &str = env!("KAUDIT_RUSTC");

/// Register `kaudit_build_info` and the `process_*` collector in `registry`. Fails if either is
/// registered there already.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let opts = Opts::new("kaudit_build_info", "Always 1; its labels say which build of kaudit is running.")
        .const_label("version", VERSION)
        .const_label("git_sha", GIT_SHA)
        .const_label("rustc", RUSTC);
    let info = IntGauge::with_opts(opts)?;
    info.set(1);
    registry.register(Box::new(info))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_metrics_pass_promtool() {
        let registry = Registry::new();
        register(&registry).unwrap();
        assert!(register(&registry).is_err(), "twice in one registry is refused");
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        let info = format!(r#"kaudit_build_info{{git_sha="{GIT_SHA}",rustc="{RUSTC}",version="{VERSION}"}} 1"#);
        assert!(text.lines().any(|l| l == info), "missing {info:?} in\n{text}");
        for value in [VERSION, GIT_SHA, RUSTC] {
            assert!(!value.is_empty() && !value.contains(char::is_whitespace), "{value:?}");
        }
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_threads",
            "process_start_time_seconds",
        ] {
            let sample = text.lines().find(|l| l.starts_with(&format!("{family} "))).unwrap_or_default();
            let value: f64 = sample.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(-1.0);
            assert!(value >= 0.0, "{family}: {sample:?} in\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes ") && !text.contains("process_resident_memory_bytes 0\n"));
        let (ok, report) = kaudit_testkit::promtool_check(&text);
        assert!(ok && report.trim().is_empty(), "promtool check metrics failed:\n{report}");
    }
}
