//! `kaudit-mock-cluster`: librdkafka's mock Kafka cluster in its own process, on loopback ports.
//!
//! Prints `BOOTSTRAP=host:port,...` on stdout once the topics exist, then serves until its
//! standard input closes or it receives SIGTERM. For end-to-end tests and local experiments
//! with kcat: `kaudit-mock-cluster --topic orders:6`.

use std::io::{BufRead, Write};

use clap::Parser;
use rdkafka::mocking::MockCluster;

#[derive(Parser)]
#[command(about = "librdkafka's mock Kafka cluster on loopback, until stdin closes")]
struct Args {
    /// Brokers in the cluster.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// Topics to create, as NAME:PARTITIONS; repeat for more.
    #[arg(long = "topic")]
    topics: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cluster = match MockCluster::new(args.brokers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kaudit-mock-cluster: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for spec in &args.topics {
        let (name, partitions) = spec.split_once(':').unwrap_or((spec, "1"));
        let Ok(partitions) = partitions.parse::<i32>() else {
            eprintln!("kaudit-mock-cluster: --topic {spec:?} is not NAME:PARTITIONS");
            return std::process::ExitCode::from(2);
        };
        if let Err(e) = cluster.create_topic(name, partitions, 1) {
            eprintln!("kaudit-mock-cluster: creating {name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    println!("BOOTSTRAP={}", cluster.bootstrap_servers());
    let _ = std::io::stdout().flush();
    // Serve until stdin closes (the parent exits or drops the pipe).
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(cluster);
    std::process::ExitCode::SUCCESS
}
