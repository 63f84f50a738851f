//! What the demo tells the person running it: the opening lines, a progress line while it runs,
//! and at the end the injected-vs-detected table, the alerts with their timing and the verdict.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use kaudit_agent::tap::TapShared;
use kaudit_schema::EpochMillis;
use tokio::task::JoinHandle;

use super::args::DemoArgs;
use super::faults::{BILLING, BROKER, FaultPlan, PRODUCER, TOPIC};
use super::outcome::{Conclusion, DemoOutcome};
use super::workload::Shared;
use crate::report::utc;
use kaudit_alerting::time::rfc3339;

/// The opening lines: rate, buckets, when faults start, where the API is and where alerts go.
pub fn print_banner(args: &DemoArgs, run_start: EpochMillis, plan: &FaultPlan, api: &str, sinks: &[String]) {
    let faults_from = plan.from_ms;
    let fault_text = if !args.any_fault() {
        "no faults injected".to_string()
    } else if faults_from >= run_start + args.duration.as_millis() as i64 {
        format!("no faults will be injected: they would start at {}, after the run ends", utc(faults_from))
    } else {
        let mut text = format!(
            "faults from {} (loss {} before the broker, loss {} and duplicates {} at billing, delay {} ms at \
             analytics",
            utc(faults_from),
            args.loss,
            args.consumer_loss,
            args.duplicates,
            args.delay_ms
        );
        if plan.pause_ms > 0 {
            text.push_str(&format!(", billing paused {} s", plan.pause_ms / 1000));
        }
        if let Some(at) = plan.crash_at_ms {
            text.push_str(&format!(", producer's agent crashes at {}", utc(at)));
        }
        text + ")"
    };
    let alerts_to = if sinks.is_empty() { "printed here".to_string() } else { format!("sent to {}", sinks.join(", ")) };
    eprintln!(
        "producing {} msg/s for {:?}; {}-s buckets; {fault_text}\nverifier API and /metrics on {api} (e.g. \
         {api}/api/v1/alerts); alerts {alerts_to}",
        args.rate,
        args.duration,
        args.bucket.as_millis() / 1000,
    );
}

/// A progress line every second: on a terminal rewritten in place, else every 5 s.
pub fn spawn_progress(shared: Arc<Shared>, tap: Arc<TapShared>, duration: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let started = Instant::now();
        let mut last_produced = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let c = &shared.counters;
            let produced = c.produced.load(Relaxed);
            let line = format!(
                "{:>4}s/{}s  produced {produced} ({}/s)  broker {}  billing {}  analytics {}  | lost {}+{}  duplicated {}  delayed {}",
                started.elapsed().as_secs(),
                duration.as_secs(),
                produced - last_produced,
                tap.seen(),
                c.billing.load(Relaxed),
                c.analytics.load(Relaxed),
                c.lost.load(Relaxed),
                c.billing_lost.load(Relaxed),
                c.duplicated.load(Relaxed),
                c.delayed.load(Relaxed),
            );
            last_produced = produced;
            if tty {
                eprint!("\r{line}\x1b[K");
            } else if started.elapsed().as_secs().is_multiple_of(5) {
                eprintln!("{line}");
            }
        }
    })
}

/// The table, the totals, the alerts against their bound, where the data is, and the verdict.
/// `kept` is empty when the data is kept, else a note that it is not.
pub fn print_outcome(o: &DemoOutcome, kept: &str) {
    println!("\n{}", o.table);
    let t = o.ledger.totals();
    let produced: u64 = o.ledger.buckets().values().map(|b| b.produced).sum();
    println!(
        "produced {produced}; injected: {} lost before the broker, {} lost and {} duplicated at billing, {} delayed",
        t.lost, t.billing_lost, t.duplicated, t.delayed
    );
    if !o.names.is_empty() {
        println!("\nnamed by the verifier, from the tiers' sketches (the first of each kind per bucket and edge):");
        println!("{}", o.names.trim_end());
        let named = |tier: &str| o.checks.iter().find(|c| c.naming.is_some() && c.tier == tier);
        if let Some(c) = named(BILLING).or_else(|| named(BROKER)) {
            let upstream = if c.tier == BROKER { PRODUCER } else { BROKER };
            if kept.is_empty() {
                println!(
                    "every one, with the kcat command that fetches it: kaudit lost --store {} --topic {TOPIC} \
                     --upstream {upstream} --tier {} --bucket {}",
                    o.store,
                    c.tier,
                    rfc3339(c.bucket_start_ms)
                );
            } else {
                println!("(keep the database with --data-dir DIR to list every one with `kaudit lost`)");
            }
        }
    }
    print_alerts(o);
    println!("\ntallies and verdicts in {}{kept}", o.store);
    if kept.is_empty() {
        println!("read them back with: kaudit report --store {} --topic {TOPIC} --since 1h", o.store);
    }
    print_conclusion(o);
}

fn print_alerts(o: &DemoOutcome) {
    if o.alerts.is_empty() && o.expected_alerts.is_empty() {
        println!("\nalerts: none (none expected)");
    } else {
        println!("\nalerts (time from the first faulty message; bound = bucket + grace + evaluation interval):");
    }
    for a in &o.alerts {
        let key = &a.alert.dedup_key;
        let paused_tier = o.plan.pause_ms > 0 && key.ends_with(&format!("/{TOPIC}/{BILLING}"));
        let mark = if !o.expected_alerts.contains(key) && !o.optional_alerts.contains(key) {
            "  ✗ not expected"
        } else if key.starts_with("lag/") {
            "  (the pause: lag alerts at half of it)"
        } else if paused_tier {
            "  (billing was paused: judged once it caught up)"
        } else if o.plan.crash_at_ms.is_some() && key.starts_with("loss/") && a.after_fault_ms > o.alert_bound_ms {
            "  (the first lossy buckets were held by the crashed agent: indeterminate)"
        } else if a.after_fault_ms > o.alert_bound_ms {
            "  (later than the bound: the verifier fell behind)"
        } else {
            ""
        };
        println!(
            "  {:<36} fired after {:>5.1} s (bound {:.1} s){mark}",
            a.alert.dedup_key,
            a.after_fault_ms as f64 / 1000.0,
            o.alert_bound_ms as f64 / 1000.0
        );
    }
    for missing in o.expected_alerts.iter().filter(|k| !o.alerts.iter().any(|a| &a.alert.dedup_key == *k)) {
        println!("  {missing:<36} ✗ expected but never fired");
    }
    if o.undelivered > 0 {
        println!("  {} notifications not accepted by the alert sinks", o.undelivered);
    }
}

fn print_conclusion(o: &DemoOutcome) {
    match o.conclusion() {
        Conclusion::Mismatch => println!("detection does NOT match injection (see ✗ above)"),
        _ if !o.ledger.totals().any() => {
            println!("detection matches injection: nothing injected, every bucket complete on every edge, no alert")
        }
        _ if o.plan.sketches => println!(
            "detection matches injection: every faulty bucket found with its exact count, every lost and duplicated \
             message named where the sketch holds them, no false alarm"
        ),
        _ => println!("detection matches injection: every faulty bucket found with its exact count, no false alarm"),
    }
    if o.conclusion() == Conclusion::Undelivered {
        println!(
            "but {} alert notifications were not accepted by the alert sinks (see the warnings above)",
            o.undelivered
        );
    }
}
