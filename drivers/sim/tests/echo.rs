//! The echo scenario under loss, reordering and duplication: bytes intact, counts that add up, and the
//! same trace for the same seed, in this process and in others.

use std::time::Duration;

use tern::{Dialect, Dialects};
use tern_sim::echo::{EchoReport, EchoScenario};
use tern_sim::{seed_from_env, LinkConfig};

fn rough_link() -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(3),
        loss: 0.2,
        reorder: 0.1,
        reorder_delay: Duration::from_millis(8),
        duplicate: 0.05,
        ..LinkConfig::default()
    }
}

fn small(seed: u64) -> EchoScenario {
    EchoScenario {
        seed,
        link: rough_link(),
        bytes: 256 << 10,
        datagrams: 50,
        ..EchoScenario::default()
    }
}

fn check(r: &EchoReport) {
    assert!(r.error.is_none(), "{r:?}");
    assert!(r.sha256_ok, "{}", r.to_json());
    // Every datagram handed to a session is read by the peer, lost on the network, or dropped by a queue.
    assert_eq!(
        r.datagrams_sent,
        r.datagrams_received + r.datagrams_dropped_network + r.datagrams_dropped_queues,
        "{}",
        r.to_json()
    );
}

#[test]
fn same_seed_gives_same_trace_and_another_seed_another() {
    let seed = seed_from_env(7);
    let a = small(seed).run();
    let b = small(seed).run();
    check(&a);
    check(&b);
    assert!(
        a.packets_dropped > 0 && a.packets_duplicated > 0,
        "{}",
        a.to_json()
    );
    assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
    assert_eq!(
        (a.packets_sent, a.virtual_time),
        (b.packets_sent, b.virtual_time),
        "seed {seed}"
    );
    let c = small(seed + 1).run();
    check(&c);
    assert_ne!(a.trace_hash, c.trace_hash, "seeds {seed} and {}", seed + 1);
}

/// Run by the test below in a child process: prints the report of `small(TERN_SIM_SEED)`.
#[test]
#[ignore = "run as a child process by same_seed_gives_same_trace_in_separate_processes"]
fn child_prints_report() {
    println!("REPORT {}", small(seed_from_env(11)).run().to_json());
}

fn child_hash(seed: u64) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_prints_report",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TERN_SIM_SEED", seed.to_string())
        .output()
        .expect("run child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {text}");
    let line = text
        .lines()
        .find_map(|l| l.find("REPORT ").map(|i| &l[i + 7..]))
        .expect("report line");
    let start = line.find("\"trace_hash\":\"").unwrap() + 14;
    line[start..start + 16].to_string()
}

#[test]
fn same_seed_gives_same_trace_in_separate_processes() {
    let seed = seed_from_env(11);
    let here = small(seed).run();
    check(&here);
    let first = child_hash(seed);
    let second = child_hash(seed);
    assert_eq!(first, second, "seed {seed}");
    assert_eq!(first, here.trace_hash, "seed {seed}");
}

fn sixteen_mib(dialect: Dialect) {
    let seed = seed_from_env(3);
    let dialects = match dialect {
        Dialect::Draft02 => Dialects {
            draft02: true,
            latest: false,
        },
        _ => Dialects {
            draft02: false,
            latest: true,
        },
    };
    let r = EchoScenario {
        seed,
        link: rough_link(),
        bytes: 16 << 20,
        datagrams: 500,
        dialects,
        limit: Duration::from_secs(3600),
        ..EchoScenario::default()
    }
    .run();
    eprintln!("{}", r.to_json());
    check(&r);
    assert_eq!(r.bytes_echoed, 16 << 20);
    assert_eq!(r.dialect, Some(dialect));
    assert!(r.datagrams_dropped_network > 0, "{}", r.to_json());
}

#[test]
fn sixteen_mib_echo_under_loss_reorder_duplication_draft02() {
    sixteen_mib(Dialect::Draft02);
}

#[test]
fn sixteen_mib_echo_under_loss_reorder_duplication_latest() {
    sixteen_mib(Dialect::Latest);
}
