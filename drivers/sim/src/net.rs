//! The network model: hosts joined by one-way links, each with its own seeded fate for every packet.
//!
//! Sans-IO: [`Network::send`] takes a datagram and the virtual instant it leaves, decides its fate at once
//! (from the link's settings and the link's own generator) and schedules its delivery; [`Network::poll_delivery`]
//! hands out what has arrived by a given instant and [`Network::next_delivery`] says when the next
//! arrival is. The network never reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Bursty loss on a link: the Gilbert-Elliott two-state model. Before each packet the link moves between
/// its good and bad states with the given probabilities, then loses the packet with its state's loss
/// probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad before a packet.
    pub enter_bad: f64,
    /// Probability of moving from bad back to good before a packet.
    pub leave_bad: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

/// The behaviour of one direction of a link. [`LinkConfig::default`] is a perfect 1 ms link with a
/// 1,500-byte MTU and no rate limit.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way delay of every packet.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` for each packet (packets overtake each other when
    /// it exceeds their spacing).
    pub jitter: Duration,
    /// Probability that a packet is lost, independently of the others.
    pub loss: f64,
    /// Bursty loss, applied before the independent loss.
    pub burst_loss: Option<GilbertElliott>,
    /// Probability that a packet is held back by [`reorder_delay`](Self::reorder_delay), so later packets
    /// arrive before it.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay: Duration,
    /// Probability that a packet arrives twice (the copy gets its own jitter).
    pub duplicate: f64,
    /// Largest UDP payload the link carries; larger datagrams are dropped.
    pub mtu: usize,
    /// Bandwidth in bytes per second (`None`: unlimited). Packets wait in a queue while the link is busy.
    pub rate: Option<u64>,
    /// Bytes the queue in front of a rate-limited link holds; a packet that does not fit is dropped.
    pub queue_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            burst_loss: None,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            duplicate: 0.0,
            mtu: 1500,
            rate: None,
            queue_bytes: 256 * 1024,
        }
    }
}

impl LinkConfig {
    /// A perfect link with the given one-way latency.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }
}

/// What happened to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fate {
    /// Delivered at the packet's delivery time.
    Delivered,
    /// Lost at random ([`LinkConfig::loss`]).
    Lost,
    /// Lost in a burst ([`LinkConfig::burst_loss`]).
    BurstLost,
    /// Larger than the link's MTU.
    TooBig,
    /// The rate-limited link's queue was full.
    QueueFull,
    /// Sent or due during a partition between its hosts.
    Partitioned,
    /// No host has the destination address.
    NoRoute,
}

impl Fate {
    /// True for every fate but [`Fate::Delivered`].
    pub fn is_drop(self) -> bool {
        self != Fate::Delivered
    }

    fn name(self) -> &'static str {
        match self {
            Fate::Delivered => "delivered",
            Fate::Lost => "lost",
            Fate::BurstLost => "burst-lost",
            Fate::TooBig => "too-big",
            Fate::QueueFull => "queue-full",
            Fate::Partitioned => "partitioned",
            Fate::NoRoute => "no-route",
        }
    }
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One packet's record in the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// Sequence number of the packet on the network (copies get their own).
    pub id: u64,
    /// For a duplicate: the id of the packet it copies.
    pub copy_of: Option<u64>,
    /// Virtual time the packet left its host.
    pub sent: Duration,
    /// Virtual time it arrives (for delivered packets).
    pub delivered: Option<Duration>,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// UDP payload size.
    pub size: usize,
    /// What happened to it.
    pub fate: Fate,
}

/// A datagram arriving at a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When it arrives.
    pub at: Instant,
    /// Sender's address.
    pub src: SocketAddr,
    /// Receiver's address.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub data: Vec<u8>,
}

/// A scheduled cut between two hosts, both directions, over a span of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Partition {
    a: IpAddr,
    b: IpAddr,
    from: Duration,
    until: Duration,
}

struct Link {
    cfg: LinkConfig,
    rng: ChaCha8Rng,
    bad: bool,
    busy_until: Option<Instant>,
    /// (instant the packet has left the queue, size) for packets still queued or on the wire.
    backlog: VecDeque<(Instant, usize)>,
}

/// Seeded hosts-and-links network on virtual time (see the module docs).
pub struct Network {
    seed: u64,
    start: Instant,
    default_link: LinkConfig,
    links: HashMap<(IpAddr, IpAddr), Link>,
    hosts: Vec<IpAddr>,
    partitions: Vec<Partition>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Delivery>,
    next_id: u64,
    records: Vec<PacketRecord>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.seed)
            .field("hosts", &self.hosts)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// SplitMix64's finaliser: spreads a seed and a link's addresses into an independent seed per link.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Network {
    /// A network whose every random choice comes from `seed`; virtual time 0 is `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            seed,
            start,
            default_link: LinkConfig::default(),
            links: HashMap::new(),
            hosts: Vec::new(),
            partitions: Vec::new(),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            records: Vec::new(),
        }
    }

    /// Moves virtual time 0 to `start` (before anything was sent).
    pub(crate) fn rebase(&mut self, start: Instant) {
        self.start = start;
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a host address; packets to addresses no host has are dropped ([`Fate::NoRoute`]).
    pub fn add_host(&mut self, ip: IpAddr) {
        if !self.hosts.contains(&ip) {
            self.hosts.push(ip);
        }
    }

    /// Sets the behaviour of every link not given its own with [`set_link`](Self::set_link) (links already
    /// used keep their queue and burst state and take the new settings).
    pub fn set_default_link(&mut self, cfg: LinkConfig) {
        for link in self.links.values_mut() {
            link.cfg = cfg.clone();
        }
        self.default_link = cfg;
    }

    /// Sets the behaviour of the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: IpAddr, to: IpAddr, cfg: LinkConfig) {
        self.link(from, to).cfg = cfg;
    }

    /// Cuts `a` and `b` apart (both directions) from virtual time `from` until `until`: packets sent or
    /// due in that span are dropped ([`Fate::Partitioned`]).
    pub fn partition(&mut self, a: IpAddr, b: IpAddr, from: Duration, until: Duration) {
        self.partitions.push(Partition { a, b, from, until });
    }

    fn partitioned(&self, a: IpAddr, b: IpAddr, at: Duration) -> bool {
        self.partitions.iter().any(|p| {
            ((p.a == a && p.b == b) || (p.a == b && p.b == a)) && at >= p.from && at < p.until
        })
    }

    fn link(&mut self, from: IpAddr, to: IpAddr) -> &mut Link {
        let (seed, cfg) = (self.seed, &self.default_link);
        self.links.entry((from, to)).or_insert_with(|| {
            let h = ip_bits(from).wrapping_mul(0x1_0000_0001) ^ ip_bits(to).rotate_left(64);
            let s = mix(seed ^ mix(h as u64 ^ (h >> 64) as u64));
            Link {
                cfg: cfg.clone(),
                rng: ChaCha8Rng::seed_from_u64(s),
                bad: false,
                busy_until: None,
                backlog: VecDeque::new(),
            }
        })
    }

    fn since_start(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    /// Sends one datagram at virtual instant `at`; returns its fate (a duplicate, if one is made, is
    /// recorded separately).
    pub fn send(&mut self, at: Instant, src: SocketAddr, dst: SocketAddr, data: &[u8]) -> Fate {
        let id = self.next_id;
        self.next_id += 1;
        let sent = self.since_start(at);
        let record = |fate, delivered| PacketRecord {
            id,
            copy_of: None,
            sent,
            delivered,
            src,
            dst,
            size: data.len(),
            fate,
        };
        let (s, d) = (src.ip(), dst.ip());
        if !self.hosts.contains(&d) {
            self.records.push(record(Fate::NoRoute, None));
            return Fate::NoRoute;
        }
        if self.partitioned(s, d, sent) {
            self.records.push(record(Fate::Partitioned, None));
            return Fate::Partitioned;
        }
        let link = self.link(s, d);
        let cfg = link.cfg.clone();
        let mut fate = Fate::Delivered;
        if data.len() > cfg.mtu {
            fate = Fate::TooBig;
        }
        if let Some(ge) = cfg.burst_loss {
            let flip = if link.bad { ge.leave_bad } else { ge.enter_bad };
            if link.rng.random_bool(flip.clamp(0.0, 1.0)) {
                link.bad = !link.bad;
            }
            let p = if link.bad { ge.loss_bad } else { ge.loss_good };
            if link.rng.random_bool(p.clamp(0.0, 1.0)) && fate == Fate::Delivered {
                fate = Fate::BurstLost;
            }
        }
        if cfg.loss > 0.0 && link.rng.random_bool(cfg.loss.min(1.0)) && fate == Fate::Delivered {
            fate = Fate::Lost;
        }
        // The queue in front of a rate-limited link: the packet leaves it once the link has carried
        // everything ahead of it.
        let mut departs = at;
        if let (Some(rate), Fate::Delivered) = (cfg.rate, fate) {
            while link.backlog.front().is_some_and(|(done, _)| *done <= at) {
                link.backlog.pop_front();
            }
            let queued: usize = link.backlog.iter().map(|(_, n)| n).sum();
            if queued + data.len() > cfg.queue_bytes {
                fate = Fate::QueueFull;
            } else {
                let start = link.busy_until.map_or(at, |b| b.max(at));
                let ns = data.len() as u128 * 1_000_000_000 / rate.max(1) as u128;
                departs = start + Duration::from_nanos(ns as u64);
                link.busy_until = Some(departs);
                link.backlog.push_back((departs, data.len()));
            }
        }
        if fate != Fate::Delivered {
            self.records.push(record(fate, None));
            return fate;
        }
        let delay = |link: &mut Link| {
            let mut d = cfg.latency;
            if !cfg.jitter.is_zero() {
                let j = link.rng.random_range(0..=cfg.jitter.as_nanos() as u64);
                d += Duration::from_nanos(j);
            }
            if cfg.reorder > 0.0 && link.rng.random_bool(cfg.reorder.min(1.0)) {
                d += cfg.reorder_delay;
            }
            d
        };
        let arrive = departs + delay(link);
        let copy = (cfg.duplicate > 0.0 && link.rng.random_bool(cfg.duplicate.min(1.0)))
            .then(|| delay(link));
        let fate = self.schedule(id, None, sent, arrive, src, dst, data);
        if let Some(extra) = copy {
            let cid = self.next_id;
            self.next_id += 1;
            self.schedule(cid, Some(id), sent, departs + extra, src, dst, data);
        }
        fate
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule(
        &mut self,
        id: u64,
        copy_of: Option<u64>,
        sent: Duration,
        arrive: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
    ) -> Fate {
        let due = self.since_start(arrive);
        let (fate, delivered) = if self.partitioned(src.ip(), dst.ip(), due) {
            (Fate::Partitioned, None)
        } else {
            (Fate::Delivered, Some(due))
        };
        self.records.push(PacketRecord {
            id,
            copy_of,
            sent,
            delivered,
            src,
            dst,
            size: data.len(),
            fate,
        });
        if fate == Fate::Delivered {
            self.queue.push(Reverse((arrive, id)));
            self.in_flight.insert(
                id,
                Delivery {
                    at: arrive,
                    src,
                    dst,
                    data: data.to_vec(),
                },
            );
        }
        fate
    }

    /// When the next packet arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    /// The next packet that has arrived by `now` (in arrival order; ties in sending order).
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery> {
        let Reverse((t, id)) = *self.queue.peek()?;
        if t > now {
            return None;
        }
        self.queue.pop();
        self.in_flight.remove(&id)
    }

    /// Every packet sent so far, in sending order (a duplicate right after its original).
    pub fn records(&self) -> &[PacketRecord] {
        &self.records
    }

    /// Drops the records kept so far (packet ids go on counting).
    pub(crate) fn forget_records(&mut self) {
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, SocketAddr) {
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap())
    }

    fn net(seed: u64, cfg: LinkConfig) -> (Network, Instant) {
        let start = Instant::now();
        let mut n = Network::new(seed, start);
        let (a, b) = addrs();
        n.add_host(a.ip());
        n.add_host(b.ip());
        n.set_default_link(cfg);
        (n, start)
    }

    fn fates(seed: u64, cfg: &LinkConfig, count: usize) -> Vec<(Fate, Option<Duration>)> {
        let (mut n, start) = net(seed, cfg.clone());
        let (a, b) = addrs();
        for i in 0..count {
            n.send(start + Duration::from_millis(i as u64), a, b, &[0u8; 100]);
        }
        n.records().iter().map(|r| (r.fate, r.delivered)).collect()
    }

    #[test]
    fn same_seed_same_fates_other_seed_others() {
        let cfg = LinkConfig {
            loss: 0.3,
            jitter: Duration::from_millis(4),
            duplicate: 0.1,
            reorder: 0.1,
            ..LinkConfig::default()
        };
        let x = fates(5, &cfg, 500);
        assert_eq!(x, fates(5, &cfg, 500));
        assert_ne!(x, fates(6, &cfg, 500));
        let lost = x.iter().filter(|(f, _)| *f == Fate::Lost).count();
        assert!((100..200).contains(&lost), "{lost} of 500 lost at 30%");
    }

    #[test]
    fn deliveries_come_out_in_arrival_order_with_latency_and_copies() {
        let cfg = LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            duplicate: 0.5,
            ..LinkConfig::default()
        };
        let (mut n, start) = net(1, cfg);
        let (a, b) = addrs();
        for i in 0..100u8 {
            assert_eq!(
                n.send(start + Duration::from_micros(100 * i as u64), a, b, &[i]),
                Fate::Delivered
            );
        }
        let copies = n.records().iter().filter(|r| r.copy_of.is_some()).count();
        assert!((25..75).contains(&copies), "{copies}");
        assert!(
            n.poll_delivery(start + Duration::from_millis(9)).is_none(),
            "nothing before the latency"
        );
        let mut last = start;
        let mut got = 0;
        while let Some(d) = n.poll_delivery(start + Duration::from_secs(1)) {
            assert!(d.at >= last);
            assert!(d.at >= start + Duration::from_millis(10));
            last = d.at;
            got += 1;
        }
        assert_eq!(got, 100 + copies);
    }

    #[test]
    fn mtu_partition_and_unknown_hosts_drop() {
        let (mut n, start) = net(
            1,
            LinkConfig {
                mtu: 1200,
                ..LinkConfig::default()
            },
        );
        let (a, b) = addrs();
        assert_eq!(n.send(start, a, b, &[0; 1201]), Fate::TooBig);
        assert_eq!(n.send(start, a, b, &[0; 1200]), Fate::Delivered);
        assert_eq!(
            n.send(start, a, "10.9.9.9:1".parse().unwrap(), &[0; 10]),
            Fate::NoRoute
        );
        n.partition(
            a.ip(),
            b.ip(),
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(
            n.send(at(999), a, b, &[0; 10]),
            Fate::Partitioned,
            "arrives inside the partition"
        );
        assert_eq!(
            n.send(at(1500), b, a, &[0; 10]),
            Fate::Partitioned,
            "both directions"
        );
        assert_eq!(n.send(at(2000), a, b, &[0; 10]), Fate::Delivered, "healed");
    }

    #[test]
    fn rate_limit_spaces_packets_and_a_full_queue_drops() {
        let cfg = LinkConfig {
            latency: Duration::ZERO,
            rate: Some(1_000_000),
            queue_bytes: 10_000,
            ..LinkConfig::default()
        };
        let (mut n, start) = net(1, cfg);
        let (a, b) = addrs();
        let f: Vec<Fate> = (0..12).map(|_| n.send(start, a, b, &[0; 1000])).collect();
        assert_eq!(f.iter().filter(|f| **f == Fate::Delivered).count(), 10);
        assert_eq!(f[10], Fate::QueueFull);
        // 1,000 bytes at 1 MB/s: one packet per millisecond.
        let times: Vec<Duration> = n.records().iter().filter_map(|r| r.delivered).collect();
        assert_eq!(times[0], Duration::from_millis(1));
        assert_eq!(times[9], Duration::from_millis(10));
        // Once the queue has drained, packets fit again.
        assert_eq!(
            n.send(start + Duration::from_millis(10), a, b, &[0; 1000]),
            Fate::Delivered
        );
    }

    #[test]
    fn gilbert_elliott_losses_come_in_bursts() {
        let cfg = LinkConfig {
            burst_loss: Some(GilbertElliott {
                enter_bad: 0.02,
                leave_bad: 0.2,
                loss_good: 0.0,
                loss_bad: 1.0,
            }),
            ..LinkConfig::default()
        };
        let x = fates(9, &cfg, 5000);
        let lost: Vec<bool> = x.iter().map(|(f, _)| *f == Fate::BurstLost).collect();
        let n_lost = lost.iter().filter(|l| **l).count();
        let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count();
        // Stationary bad share is 0.02 / 0.22 (about 9%); bursts average 5 packets.
        assert!((250..700).contains(&n_lost), "{n_lost}");
        assert!(
            n_lost as f64 / runs as f64 > 3.0,
            "{n_lost} losses in {runs} bursts"
        );
    }
}
