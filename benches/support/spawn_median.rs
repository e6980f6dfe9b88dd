//! A dependency-free timer for benches/helper-get.sh (compiled there with `rustc -O`; kept under
//! benches/support/ so cargo does not take it for a bench target).
//!
//! Reads a spec (one command per line: `label<TAB>stdin-file<TAB>program<TAB>arg…`), runs every
//! command `RUNS` times **round-robin** (so load changes on a shared machine hit all rows alike),
//! each as one spawn with stdin from the file and stdout/stderr to /dev/null — how docker execs a
//! helper — and prints per-row median / p10 / p90 wall times plus the ratio of each row's median to
//! every row whose label starts with `go `.
//!
//! Usage: spawn_median SPEC RUNS

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: spawn_median SPEC RUNS");
        std::process::exit(2);
    }
    let spec = std::fs::read_to_string(&args[1]).expect("read spec");
    let runs: usize = args[2].parse().expect("RUNS is a number");
    let rows: Vec<Vec<String>> = spec
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); rows.len()];
    let run_one = |row: &[String]| -> f64 {
        let stdin = File::open(&row[1]).expect("open stdin file");
        let start = Instant::now();
        let status = Command::new(&row[2])
            .args(&row[3..])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn");
        let t = start.elapsed().as_secs_f64() * 1000.0;
        let _ = status; // not-found rows exit 1 on purpose
        t
    };
    for row in &rows {
        for _ in 0..3 {
            run_one(row); // warm-up
        }
    }
    for _ in 0..runs {
        for (i, row) in rows.iter().enumerate() {
            times[i].push(run_one(row));
        }
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let stats: Vec<(f64, f64, f64)> = times
        .iter_mut()
        .map(|v| (pct(v, 0.5), pct(v, 0.1), pct(v, 0.9)))
        .collect();
    let go: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r[0].starts_with("go "))
        .map(|(i, _)| i)
        .collect();
    let w = rows
        .iter()
        .map(|r| r[0].chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    print!(
        "{:w$}  {:>9}  {:>7}  {:>7}",
        "helper", "median ms", "p10", "p90"
    );
    for &g in &go {
        print!("  {:>14}", format!("vs {}", &rows[g][0][3..]));
    }
    println!();
    for (i, row) in rows.iter().enumerate() {
        let (m, p10, p90) = stats[i];
        print!("{:w$}  {m:>9.2}  {p10:>7.2}  {p90:>7.2}", row[0]);
        for &g in &go {
            print!("  {:>14}", format!("{:.2}x", m / stats[g].0));
        }
        println!();
    }
}
