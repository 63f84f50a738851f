//! A global allocator that counts what Rust code allocates, so a bench can report the bytes its
//! steady path allocates per message (librdkafka's own C allocations are not seen). It counts
//! only: every request goes to the system allocator, and a path that allocates nothing pays
//! nothing. `record` leaves the figure beside criterion's estimates for `examples/bench_table.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

fn count(bytes: usize) {
    BYTES.fetch_add(bytes as u64, Relaxed);
    CALLS.fetch_add(1, Relaxed);
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Bytes and allocations so far, in all threads.
pub fn allocated() -> (u64, u64) {
    (BYTES.load(Relaxed), CALLS.load(Relaxed))
}

/// Bytes and allocations per message while `run` handles `messages` messages.
pub fn per_message(messages: u64, run: impl FnOnce()) -> (f64, f64) {
    let (bytes, calls) = allocated();
    run();
    let (bytes_after, calls_after) = allocated();
    ((bytes_after - bytes) as f64 / messages as f64, (calls_after - calls) as f64 / messages as f64)
}

/// Bytes and allocations per call of `f` over `n` calls, after one call to warm up (a first
/// message creates its stream and bucket).
#[allow(dead_code)] // not every bench counts calls
pub fn per_call(n: u64, mut f: impl FnMut()) -> (f64, f64) {
    f();
    per_message(n, || (0..n).for_each(|_| f()))
}

/// Write `alloc.json` for criterion benchmark `id` (`group_dir/function`, as criterion names its
/// directories) beside its estimates, and print it.
#[allow(dead_code)] // the tap records with a steady figure
pub fn record(id: &str, (bytes, calls): (f64, f64)) {
    println!("{id}: {bytes:.1} bytes and {calls:.3} allocations per message");
    let Some(target) = target_dir() else { return };
    let dir = target.join("criterion").join(id);
    let json = format!(r#"{{"bytes_per_message":{bytes},"allocations_per_message":{calls}}}"#);
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("alloc.json"), json)).is_err() {
        eprintln!("could not write {}", dir.join("alloc.json").display());
    }
}

/// [`record`] with the figure of a steady stretch as well (the middle of a pass, flushes
/// included, start and shutdown not): `steady_bytes_per_message`, `steady_allocations_per_message`.
#[allow(dead_code)] // only the tap has a start and shutdown to leave out
pub fn record_with_steady(id: &str, (bytes, calls): (f64, f64), (steady_bytes, steady_calls): (f64, f64)) {
    println!(
        "{id}: {bytes:.1} bytes and {calls:.3} allocations per message over a whole pass; \
         {steady_bytes:.1} bytes and {steady_calls:.4} allocations per message steady"
    );
    let Some(target) = target_dir() else { return };
    let dir = target.join("criterion").join(id);
    let json = format!(
        r#"{{"bytes_per_message":{bytes},"allocations_per_message":{calls},"steady_bytes_per_message":{steady_bytes},"steady_allocations_per_message":{steady_calls}}}"#
    );
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("alloc.json"), json)).is_err() {
        eprintln!("could not write {}", dir.join("alloc.json").display());
    }
}

/// Write `interleaved.json` in criterion's directory of `group` (as criterion names it): each
/// function's nanoseconds per message over rounds that ran every function in turn (each round in
/// a rotated order), so slow drifts of a noisy machine weigh on all alike; `examples/bench_table.rs`
/// takes its ratios from it.
#[allow(dead_code)] // only the producer and tap benches interleave
pub fn record_interleaved(group: &str, rounds: usize, results: &[(&str, std::time::Duration, u64)]) {
    let fields: Vec<String> = results
        .iter()
        .map(|(name, total, messages)| format!(r#""{name}":{}"#, total.as_nanos() as f64 / *messages as f64))
        .collect();
    let per_s: Vec<String> = results
        .iter()
        .map(|(name, total, messages)| format!("{name} {:.3} M msg/s", *messages as f64 / total.as_secs_f64() / 1e6))
        .collect();
    println!("{group}, interleaved over {rounds} rounds: {}", per_s.join(", "));
    let Some(target) = target_dir() else { return };
    let dir = target.join("criterion").join(group);
    let json = format!(r#"{{"rounds":{rounds},"ns_per_message":{{{}}}}}"#, fields.join(","));
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("interleaved.json"), json)).is_err() {
        eprintln!("could not write {}", dir.join("interleaved.json").display());
    }
}

/// The target directory this bench runs from (`<target>/release/deps/<bench>`).
pub fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_path_buf())
}
