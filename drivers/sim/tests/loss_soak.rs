//! The loss soak, small: several sessions upload at once under 20% loss with reordering and duplication
//! on both directions; every digest matches, and the same seed gives the same trace. (The `soak`
//! benchmark in `tern-benches` runs the same scenario at 50 sessions of 64 MiB.)

use std::time::Duration;

use tern_sim::soak::{LossSoak, LossSoakReport};
use tern_sim::{seed_from_env, LinkConfig};

fn soak(seed: u64) -> LossSoak {
    LossSoak {
        seed,
        sessions: 3,
        client_endpoints: 1,
        bytes: 1 << 20,
        link: LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(2),
            loss: 0.2,
            reorder: 0.1,
            reorder_delay: Duration::from_millis(8),
            duplicate: 0.05,
            ..LinkConfig::default()
        },
        limit: Duration::from_secs(3600),
        wall_limit: None,
        record: true,
        qlog_dir: None,
    }
}

fn check(r: &LossSoakReport) {
    assert!(r.error.is_none(), "seed {}: {:?}", r.seed, r.error);
    assert_eq!(r.sessions_ok, 3, "seed {}: {:?}", r.seed, r.sessions);
    for s in &r.sessions {
        assert_eq!(s.received_bytes, 1 << 20);
        assert_eq!(s.sent_sha256, s.received_sha256);
        assert_eq!(s.sent_sha256.len(), 64);
    }
    // The sessions sent different data.
    assert_ne!(r.sessions[0].sent_sha256, r.sessions[1].sent_sha256);
    assert_eq!(r.bytes_received, 3 << 20);
    // The network did lose and copy packets, about a fifth lost, and QUIC saw losses to repair.
    assert!(r.packets_duplicated > 0, "{r:?}");
    let share = r.packets_dropped as f64 / (r.packets_sent + r.packets_duplicated) as f64;
    assert!(
        (0.15..0.25).contains(&share),
        "dropped share {share}: {r:?}"
    );
    assert!(r.quic_packets_lost > 0, "{r:?}");
}

#[test]
fn sessions_upload_intact_under_loss_reordering_and_duplication_and_trace_repeats_per_seed() {
    let seed = seed_from_env(16);
    let a = soak(seed).run();
    check(&a);
    let b = soak(seed).run();
    check(&b);
    assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
    assert_eq!(
        (a.packets_sent, a.packets_dropped, a.virtual_time),
        (b.packets_sent, b.packets_dropped, b.virtual_time),
        "seed {seed}"
    );
    assert_eq!(a.sessions, b.sessions, "seed {seed}");
    let c = soak(seed + 1).run();
    check(&c);
    assert_ne!(a.trace_hash, c.trace_hash, "seeds {seed} and {}", seed + 1);
}
