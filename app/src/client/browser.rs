//! A client with one current session and a history, as a browser tab has.

use tern_async::Session;

use crate::client::{Client, ClientError};

/// One current session and a history of URLs, like a browser tab: [`navigate`](Self::navigate) opens a
/// session to a new URL (dropping the forward history), [`back`](Self::back) / [`forward`](Self::forward)
/// reopen a neighbouring entry, [`refresh`](Self::refresh) reopens the current one. The previous session
/// is closed (code 0) once the new one is up; a failed navigation changes nothing.
///
/// ```no_run
/// # async fn run(client: tern_app::Client) -> Result<(), tern_app::ClientError> {
/// use tern_app::Browser;
/// let mut tab = Browser::new(client);
/// tab.navigate("https://example.com:4433/a").await?;
/// tab.navigate("https://example.com:4433/b").await?;
/// let a = tab.back().await?;
/// assert_eq!(a.path(), "/a");
/// assert_eq!(tab.history(), ["https://example.com:4433/a", "https://example.com:4433/b"]);
/// tab.forward().await?;
/// assert_eq!(tab.current_url(), Some("https://example.com:4433/b"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Browser {
    client: Client,
    history: Vec<String>,
    index: Option<usize>,
    session: Option<Session>,
}

impl Browser {
    /// An empty tab using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            history: Vec::new(),
            index: None,
            session: None,
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url`: on success it becomes the current entry, after the current one, and the forward
    /// history is dropped.
    pub async fn navigate(&mut self, url: &str) -> Result<Session, ClientError> {
        let session = self.client.connect(url).await?;
        let keep = self.index.map_or(0, |i| i + 1);
        self.history.truncate(keep);
        self.history.push(url.to_string());
        self.index = Some(self.history.len() - 1);
        Ok(self.replace(session))
    }

    /// Reopens the previous entry. [`ClientError::NoHistory`] at the first entry.
    pub async fn back(&mut self) -> Result<Session, ClientError> {
        match self.index {
            Some(i) if i > 0 => self.go(i - 1).await,
            _ => Err(ClientError::NoHistory("back")),
        }
    }

    /// Reopens the next entry. [`ClientError::NoHistory`] at the last entry.
    pub async fn forward(&mut self) -> Result<Session, ClientError> {
        match self.index {
            Some(i) if i + 1 < self.history.len() => self.go(i + 1).await,
            _ => Err(ClientError::NoHistory("forward")),
        }
    }

    /// Reopens the current entry (a new session). [`ClientError::NoHistory`] before the first navigation.
    pub async fn refresh(&mut self) -> Result<Session, ClientError> {
        match self.index {
            Some(i) => self.go(i).await,
            None => Err(ClientError::NoHistory("refresh")),
        }
    }

    async fn go(&mut self, index: usize) -> Result<Session, ClientError> {
        let session = self.client.connect(&self.history[index]).await?;
        self.index = Some(index);
        Ok(self.replace(session))
    }

    fn replace(&mut self, session: Session) -> Session {
        if let Some(old) = self.session.replace(session.clone()) {
            let _ = old.close(0, "");
        }
        session
    }

    /// Every entry, oldest first.
    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// The position of the current entry in [`history`](Self::history).
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    /// The current entry's URL.
    pub fn current_url(&self) -> Option<&str> {
        self.index.map(|i| self.history[i].as_str())
    }

    /// The current session (it may have ended since; see [`Session::is_open`]).
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// True when [`back`](Self::back) has an entry to go to.
    pub fn can_go_back(&self) -> bool {
        self.index.is_some_and(|i| i > 0)
    }

    /// True when [`forward`](Self::forward) has an entry to go to.
    pub fn can_go_forward(&self) -> bool {
        self.index.is_some_and(|i| i + 1 < self.history.len())
    }

    /// Closes the current session (the history stays).
    pub fn close(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.close(0, "");
        }
    }
}
