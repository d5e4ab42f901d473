//! Runs the echo scenario on a simulated link and prints one JSON line.
//!
//! ```text
//! cargo run --release -p tern-sim --example sim_echo -- --seed 7 --loss 0.2 --reorder 0.1 --duplicate 0.05 --bytes 16777216
//! ```
//! Options: `--seed N` (or `TERN_SIM_SEED`), `--loss P`, `--reorder P`, `--duplicate P`, `--jitter-ms MS`,
//! `--latency-ms MS`, `--bytes B`, `--datagrams N`, `--dialect draft02|latest|both`.
//! Exits with status 0 only when every stream byte came back intact.

use std::time::Duration;

use tern::Dialects;
use tern_sim::echo::EchoScenario;
use tern_sim::{seed_from_env, LinkConfig};

fn main() {
    let mut sc = EchoScenario {
        seed: seed_from_env(1),
        ..EchoScenario::default()
    };
    let mut link = LinkConfig::with_latency(Duration::from_millis(10));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            usage(&format!("{flag} needs a value"));
        };
        let num = |v: &str| -> f64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad number for {flag}: {v}")))
        };
        match flag.as_str() {
            "--seed" => {
                sc.seed = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("bad seed {value}")))
            }
            "--loss" => link.loss = num(&value),
            "--reorder" => link.reorder = num(&value),
            "--duplicate" => link.duplicate = num(&value),
            "--jitter-ms" => link.jitter = Duration::from_secs_f64(num(&value) / 1e3),
            "--latency-ms" => link.latency = Duration::from_secs_f64(num(&value) / 1e3),
            "--bytes" => sc.bytes = num(&value) as usize,
            "--datagrams" => sc.datagrams = num(&value) as usize,
            "--dialect" => {
                sc.dialects = match value.as_str() {
                    "draft02" => Dialects {
                        draft02: true,
                        latest: false,
                    },
                    "latest" => Dialects {
                        draft02: false,
                        latest: true,
                    },
                    "both" => Dialects::default(),
                    other => usage(&format!("unknown dialect {other}")),
                }
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    if !(0.0..1.0).contains(&link.loss) {
        usage("--loss must be in [0, 1)");
    }
    sc.link = link;
    let report = sc.run();
    println!("{}", report.to_json());
    if !report.sha256_ok {
        eprintln!(
            "echo failed; rerun with --seed {} (or {}={})",
            report.seed,
            tern_sim::SEED_VAR,
            report.seed
        );
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "sim_echo: {msg}\nusage: sim_echo [--seed N] [--loss P] [--reorder P] [--duplicate P] [--jitter-ms MS] \
         [--latency-ms MS] [--bytes B] [--datagrams N] [--dialect draft02|latest|both]"
    );
    std::process::exit(2)
}
