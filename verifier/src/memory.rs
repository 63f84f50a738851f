//! The allocator's arenas. glibc's malloc gives threads that contend for it arenas of their own (up
//! to eight per core), and memory freed into one arena serves only that arena's later requests: a
//! verifier's passes, spread over the runtime's worker threads, left a tenth of its resident memory
//! stranded between arenas (26 of 260 MiB at 10,000 topics, `examples/scale.rs`). Two arenas keep
//! that to a few MiB with no measurable cost to a pass (first pass 11.6 s against 12.1 s).

/// Arenas the verifier asks glibc for.
pub const MALLOC_ARENAS: i32 = 2;

/// Limit glibc's malloc to [`MALLOC_ARENAS`] arenas, unless the environment sets
/// `MALLOC_ARENA_MAX` (glibc reads that itself). Call it first thing in `main`, before any thread
/// starts; elsewhere than Linux with glibc it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt changes a tunable of the allocator and touches no Rust memory; it is
        // called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}
