//! `kaudit demo`: the whole system in one process, with faults injected, on embedded defaults.
//!
//! librdkafka's mock cluster runs in-process on loopback ports. An audited producer writes orders
//! at `--rate` for `--duration`; a broker-tier tap and two consumer groups (billing, analytics) read
//! them, each with its agent; every agent flushes to SQLite (or the configured store); the verifier
//! evaluates buckets as they close, raises alerts (to `--webhook`, else printed) and serves its API.
//! Faults (see [`faults`]) start at a bucket boundary after `--faults-after`. At the end the demo
//! prints, per bucket and edge, what was injected beside what was detected, and how long each
//! alert took from the first faulty message; it exits 0 when detection matches injection.
//!
//! Rooms: [`args`] the flags, [`settings`] what the agents and verifier are given, [`stack`] what
//! is started and stopped, [`workload`] the applications and the faults they inject, [`faults`]
//! the ledger of what was injected and the check of the verdicts against it, [`alerts`] the alerts
//! seen while it runs, [`console`] what is printed.

pub mod alerts;
pub mod args;
pub mod check;
pub mod console;
pub mod faults;
mod outcome;
mod settings;
mod stack;
mod wait;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use kaudit_agent::{Clock, SystemClock};
use kaudit_schema::EpochMillis;

pub use self::alerts::AlertTiming;
use self::alerts::AlertWatcher;
pub use self::args::DemoArgs;
use self::faults::{BILLING, FaultPlan, TOPIC};
pub use self::outcome::{Conclusion, DemoOutcome};
use self::stack::Stack;
use self::workload::{Consumers, Shared};
use crate::config::KauditConfig;

/// Run the demo with `data_dir` for its state: start the stack, let the consumers join, produce
/// with faults, drain, let the verifier judge the last bucket while the agents still report,
/// stop the agents, let the verifier deliver, then check.
pub async fn run(args: &DemoArgs, config: &KauditConfig, data_dir: PathBuf) -> anyhow::Result<DemoOutcome> {
    let stack = Stack::start(args, config, &data_dir).await?;
    let shared = Shared::new(stack.width, stack.verifier.delay_threshold_ms);
    let agents = &stack.agents;
    let consumers =
        Consumers::start(&stack.bootstrap, agents.billing.auditor(), agents.analytics.auditor(), &shared, args.seed)?;
    consumers.joined(agents.tap.shared()).await?;
    let run_start = SystemClock.now_ms();
    let geometry = config.agent.sketch.geometry();
    let plan = fault_plan(args, &stack, run_start, geometry.is_some());
    let capacity = geometry.map_or(0, |g| g.capacity());
    shared.set_plan(plan);
    console::print_banner(args, run_start, &plan, &stack.verifier.api, &stack.verifier.sink_names);
    let interrupt = on_interrupt(shared.clone());
    let watcher = AlertWatcher::spawn(stack.store.clone(), run_start, plan.from_ms);
    let progress = console::spawn_progress(shared.clone(), agents.tap.shared().clone(), args.duration);
    produce(args, &stack, &shared).await?;
    consumers.drain(&shared, agents.tap.shared()).await?;
    progress.abort();
    eprintln!();
    // Every bucket is known once producing ended; what happened to each is final once the
    // consumers have stopped (analytics processes the messages it still holds as they fall due).
    let produced = shared.ledger.lock().expect("ledger poisoned").clone();
    stack.verifier.wait_judged(&*stack.store, &produced, stack.width, SystemClock.now_ms()).await?;
    consumers.stop().await?;
    let ledger = shared.ledger.lock().expect("ledger poisoned").clone();
    let Stack { url, store, agents, verifier, cluster, .. } = stack;
    agents.shutdown().await?;
    let (alert_bound_ms, delay_threshold_ms) = (verifier.alert_bound_ms, verifier.delay_threshold_ms);
    let undelivered = verifier.finish(&*store).await?;
    let alerts = watcher.finish().await;
    interrupt.abort();
    drop(cluster);
    let (first, last) = (ledger.buckets().keys().next().copied(), ledger.buckets().keys().last().copied());
    let verdicts = store.read_verdicts(TOPIC, first.unwrap_or(0), last.unwrap_or(0) + 1).await?;
    let checks = check::check(&ledger, &verdicts, &plan, delay_threshold_ms, capacity);
    let unnamed = |bucket| checks.iter().any(|c| c.bucket_start_ms == bucket && c.tier == BILLING && !c.named_whole());
    let (expected_alerts, optional_alerts) = ledger.expected_alerts(&plan, delay_threshold_ms, unnamed);
    Ok(DemoOutcome {
        table: check::render(&ledger, &checks, crate::report::utc),
        names: check::render_names(&checks, crate::report::utc),
        expected_alerts,
        optional_alerts,
        ledger,
        plan,
        checks,
        alerts,
        alert_bound_ms,
        undelivered,
        store: url.to_string(),
    })
}

/// Faults from the first bucket boundary at least `--faults-after` after the start; a producer
/// crash halfway through that bucket, whose window runs from the bucket of the agent's last flush
/// before it to the bucket of the moment the verifier takes the agent for dead.
fn fault_plan(args: &DemoArgs, stack: &Stack, run_start: EpochMillis, sketches: bool) -> FaultPlan {
    let width = stack.width;
    let t = run_start + args.faults_after.as_millis() as i64;
    let b = width.start_of(t);
    let from_ms = if b == t { b } else { width.end_of(b) };
    let crash_at_ms = args.crash_producer.then_some(from_ms + width.as_millis() / 2);
    let v = &stack.verifier;
    let crash_window = crash_at_ms.map(|at| {
        (width.start_of(at - v.flush_interval_ms), width.start_of(at + v.flush_interval_ms + v.agent_timeout_ms))
    });
    FaultPlan {
        loss: args.loss,
        duplicates: args.duplicates,
        consumer_loss: args.consumer_loss,
        sketches,
        delay_ms: args.delay_ms,
        from_ms,
        pause_ms: args.pause_consumer.as_millis() as u64,
        crash_at_ms,
        crash_window,
    }
}

/// Produce on a thread of its own (the audited `ThreadedProducer` blocks).
async fn produce(args: &DemoArgs, stack: &Stack, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let agents = &stack.agents;
    let (bootstrap, auditor, shared) = (stack.bootstrap.clone(), agents.producer.auditor().clone(), shared.clone());
    let crash = agents.successor.as_ref().map(|successor| workload::ProducerCrash {
        switch: agents.producer.crash_switch(),
        successor: successor.auditor().clone(),
    });
    let (rate, duration, seed) = (args.rate, args.duration, args.seed);
    let run = move || workload::produce(&bootstrap, auditor, &shared, rate, duration, seed, crash);
    tokio::task::spawn_blocking(run).await?
}

/// Ctrl-C stops producing and still finishes the audit; a second Ctrl-C quits.
fn on_interrupt(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping the producer and finishing the audit (Ctrl-C again to quit)");
            shared.stop_producing.store(true, Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    })
}
