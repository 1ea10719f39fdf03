//! Seed sweep of the SIGKILL scenario of tests/operator_faults_kill.rs (issue 12): for each seed,
//! kubesim in-process and `kubedirector run` as a child process, killed and restarted at the
//! seed's points; prints one `pass`/`FAIL` line per seed and the problems of the failures.
//!
//! ```text
//! cargo build && cargo run --example fault_sweep -- [--seeds N] [--first S]
//! ```
//!
//! It runs the binary beside the example (`target/debug/kubedirector`, build it first) or
//! `$KUBEDIRECTOR_BIN`. Exit status: 0 when every seed passed, 1 otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

#[path = "../tests/operator_support/mod.rs"]
mod operator_support;

use operator_support::kill;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
            .unwrap_or(default)
    };
    let (seeds, first) = (flag("--seeds", 10), flag("--first", 1));
    let binary = operator_support::operator_binary();
    if !binary.exists() {
        eprintln!(
            "fault_sweep: {} not found; run `cargo build` first or set KUBEDIRECTOR_BIN",
            binary.display()
        );
        std::process::exit(2);
    }
    let (mut passed, mut failed) = (0, Vec::new());
    for seed in first..first + seeds {
        let o = kill::run(seed);
        println!("{}", kill::summary(&o));
        if o.skipped.is_some() {
            std::process::exit(2);
        }
        if o.problems.is_empty() {
            passed += 1;
        } else {
            for p in &o.problems {
                println!("  {p}");
            }
            failed.push(seed);
        }
    }
    println!("fault_sweep: {passed}/{seeds} seeds passed; failed: {failed:?}");
    std::process::exit(i32::from(!failed.is_empty()));
}
