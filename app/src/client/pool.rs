//! Several clients used in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::join_all;
use tern_async::{Runtime, Session};

use crate::client::{Client, ClientConfig, ClientError, ClientStats};

/// Several [`Client`]s, each on its own endpoint (its own UDP port), handed out round-robin. Spreads
/// connections over source ports (load balancers hash on them) and lets one URL be reached from every
/// client at once with [`connect_all`](Self::connect_all).
///
/// ```no_run
/// # async fn run() -> Result<(), tern_app::ClientError> {
/// use std::sync::Arc;
/// use tern_app::{ClientConfig, ClientPool};
/// let runtime = Arc::new(tern_tokio::TokioRuntime::current().unwrap());
/// let pool = ClientPool::new(runtime, ClientConfig::new(), 4)?;
/// let one = pool.connect("https://example.com:4433/chat").await?;
/// let all = pool.connect_all("https://example.com:4433/chat").await;
/// assert_eq!(all.len(), 4);
/// println!("{} of {} attempts succeeded", pool.stats().succeeded, pool.stats().attempted);
/// # let _ = one; Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientPool {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl ClientPool {
    /// `size` clients (at least one) with the same configuration, each on its own endpoint.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        config: ClientConfig,
        size: usize,
    ) -> Result<Self, ClientError> {
        let clients = (0..size.max(1))
            .map(|_| Client::new(runtime.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_clients(clients))
    }

    /// A pool of these clients. Panics when `clients` is empty.
    pub fn from_clients(clients: Vec<Client>) -> Self {
        assert!(
            !clients.is_empty(),
            "a ClientPool needs at least one client"
        );
        Self {
            clients,
            next: AtomicUsize::new(0),
        }
    }

    /// The next client in turn.
    pub fn next_client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// All clients.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Always false (a pool has at least one client).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Connects with the next client in turn.
    pub async fn connect(&self, url: &str) -> Result<Session, ClientError> {
        self.next_client().connect(url).await
    }

    /// Connects from every client at once; the results are in client order.
    pub async fn connect_all(&self, url: &str) -> Vec<Result<Session, ClientError>> {
        join_all(self.clients.iter().map(|c| c.connect(url))).await
    }

    /// The clients' statistics added up.
    pub fn stats(&self) -> ClientStats {
        let mut all = ClientStats::default();
        for c in &self.clients {
            all.merge(&c.stats());
        }
        all
    }
}
