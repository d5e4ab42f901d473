use std::time::{Duration, Instant};
use tern_sim::VirtualClock;

#[test]
fn instant_follows_virtual_clock_on_its_thread_only() {
    let wall = Instant::now();
    let mut clock = VirtualClock::install();
    let base = clock.base();
    assert_eq!(Instant::now(), base);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(Instant::now() - base, Duration::from_secs(3600));
    let other = std::thread::spawn(move || Instant::now().duration_since(wall))
        .join()
        .unwrap();
    assert!(other < Duration::from_secs(60), "{other:?}");
    drop(clock);
    assert!(Instant::now() < base + Duration::from_secs(60));
}
