//! Build metadata for `kaudit_build_info`: `KAUDIT_GIT_SHA`, the commit checked out (or the
//! variable of that name set for the build, as in a container build without `.git`), and
//! `KAUDIT_RUSTC`, the compiler's version; each `unknown` when it cannot be had. Reruns when the
//! commit changes (HEAD, its branch ref, packed refs), not on every edit.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KAUDIT_GIT_SHA");
    let sha = std::env::var("KAUDIT_GIT_SHA").ok().filter(|s| !s.trim().is_empty()).or_else(git_sha);
    println!("cargo:rustc-env=KAUDIT_GIT_SHA={}", sha.as_deref().unwrap_or("unknown").trim());
    println!("cargo:rustc-env=KAUDIT_RUSTC={}", rustc_version().as_deref().unwrap_or("unknown"));
}

/// `git ARGS` in the package's directory: its trimmed output, if it ran and said something.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The commit's short hash; the files that move with it are watched.
fn git_sha() -> Option<String> {
    let sha = git(&["rev-parse", "--short=12", "HEAD"])?;
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().map(str::to_string).chain(branch) {
        // A path that does not exist would make cargo rerun this script on every build.
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(sha)
}

/// `1.91.0` from `rustc 1.91.0 (f8297e351 2025-10-28)`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).map(str::to_string)
}
