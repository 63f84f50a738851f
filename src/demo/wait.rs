//! Polling waits with a limit, for conditions the demo cannot be told about.

use std::time::{Duration, Instant};

/// Poll `done` every 100 ms until it holds, or fail after `limit`.
pub async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    until_async(limit, || std::future::ready(done())).await
}

/// As [`until`], for a condition that must itself wait (a store read).
pub async fn until_async<F: Future<Output = bool>>(limit: Duration, mut done: impl FnMut() -> F) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done().await {
        anyhow::ensure!(started.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
