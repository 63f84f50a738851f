//! How often a difference sketch names every lost and extra message, against how many there are:
//! the figures [`kaudit_schema::difference::DEFAULT_GEOMETRY`] was chosen from.
//!
//! ```text
//! cargo run --release -p kaudit-schema --example difference_rates [-- TRIALS]
//! ```
//!
//! For each geometry and each `d`, `TRIALS` (default 20,000) random pairs of tiers that share 200
//! messages and differ by `d` (half lost, half extra copies), each sketched and subtracted, then
//! decoded; deterministic (a fixed xorshift seed). Prints the share decoded in full, and the
//! decode time per table.

use std::time::Instant;

use kaudit_schema::difference::{DEFAULT_GEOMETRY, DifferenceSketch, Geometry, Locator};

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let geometries = [(32, 4), (48, 4), (60, 5), (64, 4), (80, 4), (96, 4), (120, 5), (128, 4)]
        .map(|(cells, hashes)| Geometry { cells, hashes });
    let ds = [1usize, 2, 5, 10, 15, 20, 30, 40, 50, 64, 80, 100];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    print!("| cells × hashes | bytes |");
    ds.iter().for_each(|d| print!(" d={d} |"));
    println!(" decode µs (d=20) |");
    println!("|---|---|{}---|", "---|".repeat(ds.len()));
    for g in geometries {
        let default = if g == DEFAULT_GEOMETRY { " (default)" } else { "" };
        print!("| {} × {}{default} | {} |", g.cells, g.hashes, g.bytes());
        let mut decode_ns = 0.0;
        for &d in &ds {
            let mut ok = 0;
            let mut spent = 0u128;
            for _ in 0..trials {
                let (mut up, mut down) = (DifferenceSketch::new(g), DifferenceSketch::new(g));
                for i in 0..200 {
                    let (fp, loc) = (next(), Some(Locator { partition: 0, offset: i }));
                    up.insert(fp, loc);
                    down.insert(fp, loc);
                }
                for i in 0..d {
                    let (fp, loc) = (next(), Some(Locator { partition: 1, offset: i as i64 }));
                    if i % 2 == 0 { up.insert(fp, loc) } else { down.insert(fp, loc) }
                }
                let diff = up.subtract(&down).expect("one geometry");
                let started = Instant::now();
                let decoded = diff.decode();
                spent += started.elapsed().as_nanos();
                ok += usize::from(decoded.complete && decoded.differences.len() == d);
            }
            if d == 20 {
                decode_ns = spent as f64 / trials as f64;
            }
            print!(" {:.1} % |", 100.0 * ok as f64 / trials as f64);
        }
        println!(" {:.1} |", decode_ns / 1_000.0);
    }
}
