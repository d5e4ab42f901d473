//! # tern-sim: test your WebTransport app deterministically
//!
//! A seeded, in-memory network on virtual time for [`tern`] endpoints. Latency, jitter, random and bursty
//! loss, reordering, duplication, MTU, bandwidth with a bounded queue, and scheduled partitions are all
//! drawn from one `u64` seed; time jumps straight to the next timer or packet arrival, so a minute of
//! idle timeouts and retransmissions runs in milliseconds. The same seed gives the same packets, the same
//! events and the same [`trace hash`](Sim::trace_hash); a failing run prints its seed and
//! `TERN_SIM_SEED=<seed>` reruns it.
//!
//! ```
//! use std::time::Duration;
//! use tern::{Endpoint, Event, SessionRequest};
//! use tern_sim::{identity, seed_from_env, LinkConfig, Sim};
//!
//! let seed = seed_from_env(42); // TERN_SIM_SEED=<n> reruns a given run
//! let mut sim = Sim::new(seed);
//! sim.set_links(LinkConfig { loss: 0.1, jitter: Duration::from_millis(5), ..LinkConfig::with_latency(Duration::from_millis(20)) });
//! let server = sim.add_host("10.0.0.1:4433".parse().unwrap(), Endpoint::new(identity::server_config(seed)).unwrap());
//! let client = sim.add_host("10.0.0.2:5000".parse().unwrap(), Endpoint::new(identity::client_config(seed + 1)).unwrap());
//!
//! let conn = sim.connect(client, server, "localhost").unwrap();
//! let session = sim.endpoint(client).connection(conn).unwrap()
//!     .open_session(SessionRequest::new("localhost:4433", "/chat")).unwrap();
//! sim.run_until(Duration::from_secs(10), |s| {
//!     s.take_event(client, |e| matches!(e, Event::SessionEstablished { .. })).is_some()
//! }).unwrap_or_else(|e| panic!("{e}")); // the error names the seed
//!
//! // Say hello on a stream; the server reads it.
//! let stream = sim.endpoint(client).session(session).unwrap().open_bi().unwrap();
//! sim.endpoint(client).stream(stream).unwrap().write_fin(b"hello").unwrap();
//! let (mut got, mut incoming) = (Vec::new(), None);
//! sim.run_until(Duration::from_secs(10), |s| {
//!     if incoming.is_none() {
//!         incoming = s.events(server).iter().find_map(|e| match e {
//!             Event::StreamOpened { stream, .. } => Some(*stream),
//!             _ => None,
//!         });
//!     }
//!     let Some(id) = incoming else { return false };
//!     let mut buf = [0u8; 64];
//!     match s.endpoint(server).stream(id).map(|mut st| st.read(&mut buf)) {
//!         Some(Ok(Some((n, fin)))) => {
//!             got.extend_from_slice(&buf[..n]);
//!             fin
//!         }
//!         _ => false,
//!     }
//! }).unwrap();
//! assert_eq!(got, b"hello");
//! // Thirty virtual seconds of idling take no real time.
//! sim.run_for(Duration::from_secs(30));
//! println!("seed {seed}: trace {}", sim.trace_hash());
//! ```
//!
//! ## Async code, unchanged
//! Code written against `tern-async` (and what is built on it) runs on [`SimRuntime`], a deterministic
//! single-threaded executor whose sockets are hosts of the simulated network:
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use tern_async::{Endpoint, Runtime};
//! use tern_sim::{identity, isolated, LinkConfig, SimRuntime};
//!
//! let hash = isolated(|| {
//!     let sim = SimRuntime::new(7, LinkConfig { loss: 0.05, ..LinkConfig::with_latency(Duration::from_millis(25)) });
//!     let rt: Arc<dyn Runtime> = Arc::new(sim.clone());
//!     let echoed = sim.block_on(Duration::from_secs(60), async move {
//!         let server = Endpoint::bind(rt.clone(), identity::server_config(7), "127.14.0.1:4433".parse().unwrap()).unwrap();
//!         let client = Endpoint::bind(rt.clone(), identity::client_config(8), "127.14.0.2:5000".parse().unwrap()).unwrap();
//!         rt.spawn(Box::pin(async move {
//!             let session = server.accept().await.unwrap().accept().unwrap();
//!             let (mut send, mut recv) = session.accept_bi().await.unwrap();
//!             let bytes = recv.read_to_end(1 << 20).await.unwrap();
//!             send.write_all(&bytes).await.unwrap();
//!             send.finish().unwrap();
//!             session.closed().await;
//!         }));
//!         let session = client.connect("https://127.14.0.1:4433/echo").await.unwrap();
//!         let (mut send, mut recv) = session.open_bi().await.unwrap();
//!         send.write_all(b"ping").await.unwrap();
//!         send.finish().unwrap();
//!         recv.read_to_end(1 << 20).await.unwrap()
//!     }).unwrap_or_else(|e| panic!("{e}"));
//!     assert_eq!(echoed, b"ping");
//!     sim.trace_hash()
//! });
//! println!("trace {hash}");
//! ```
//!
//! ## How quiche's clock follows the simulation (Linux only)
//! quiche reads `std::time::Instant::now()` itself, which no API can replace. This crate defines the C
//! library's `clock_gettime` for the binaries that link it (test binaries and examples that depend on
//! `tern-sim`): on a thread where a [`Sim`] (or a [`VirtualClock`]) is alive, the monotonic clocks answer
//! virtual time; on every other thread, and for `CLOCK_REALTIME`, the C library answers as usual. All
//! `unsafe` code lives in this crate; [`tern`] itself stays free of it. Other systems read their clocks
//! through other entry points, so the crate builds only on Linux.
//!
//! ## Randomness
//! Every random choice is drawn from the seed: the network's (one ChaCha8 generator per link), the
//! endpoints' connection ids ([`tern::Config::with_rng_seed`], set by [`identity`]'s configurations), and
//! BoringSSL's, which quiche uses for packet-number skips and TLS randoms: on a simulation thread this
//! crate also answers `getrandom` system calls made through the C library's `syscall` function (the way
//! BoringSSL reaches the kernel) from the seed. BoringSSL seeds one generator per thread on its first use,
//! so run each simulation that must repeat on a fresh thread ([`isolated`]; [`echo`] does). On Intel
//! CPUs BoringSSL also mixes the RDRAND instruction into every draw; there, start the test binary with
//! `OPENSSL_ia32cap=~0x4000000000000000` (which hides RDRAND from BoringSSL) for repeatable traces.
//! The [`identity`] certificate is fixed, and RSA, so handshake signatures always have the same length.
//!
//! ## Ready-made scenarios
//! [`echo`] echoes a stream and datagrams between a client and a server; [`soak`] has many sessions
//! upload at once with every byte checked by SHA-256 (the `soak` benchmark of `tern-benches` runs it with
//! gigabytes under 20% loss). Long runs turn [recording](Sim::set_recording) off so that the trace does
//! not grow with the traffic.
//!
//! ## What the trace hash covers
//! [`Sim::trace_hash`] is a digest of every packet the network saw (sending order, virtual send and
//! arrival times in microseconds, source, destination, UDP payload size, fate, which packet a duplicate
//! copies) and every app-visible event (each endpoint event's `Debug` form and the application's own
//! [`Sim::record`] entries, with virtual time and host). Packet contents are not hashed, so the hash
//! stays the same across releases of the TLS library that encrypt the same sizes differently.
#![warn(missing_docs)]
#![cfg(target_os = "linux")]

mod clock;
pub mod echo;
pub mod identity;
mod net;
mod runtime;
mod sim;
pub mod soak;
mod trace;

pub use clock::VirtualClock;
pub use net::{Delivery, Fate, GilbertElliott, LinkConfig, Network, PacketRecord};
pub use runtime::{BlockOnError, SimRuntime};
pub use sim::{isolated, seed_from_env, HostId, RunError, Sim, SimStats, SEED_VAR};
pub use trace::{Trace, TraceEvent};
