//! JSON on streams and datagrams (the `serde` feature): one value per stream (written and finished, read to
//! the end) or one value per datagram.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::JsonError;
use crate::{RecvStream, SendStream, Session, DEFAULT_READ_ALL_LIMIT};

impl SendStream {
    /// Writes `value` as JSON and finishes the stream: the whole stream is one JSON document, as the peer's
    /// [`RecvStream::read_json`] expects.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) -> Result<(), tern_async::JsonError> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Reply { status: String }
    /// let (mut send, mut recv) = session.open_bi().await?;
    /// send.send_json(&serde_json::json!({"op": "status"})).await?;
    /// let reply: Reply = recv.read_json().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        let bytes = serde_json::to_vec(value).map_err(JsonError::Encode)?;
        self.write_all_and_finish(&bytes).await?;
        Ok(())
    }
}

impl RecvStream {
    /// Reads the stream to its end (at most [`DEFAULT_READ_ALL_LIMIT`] bytes) and parses it as one JSON
    /// value. [`JsonError::Decode`] when it is not JSON of type `T`.
    pub async fn read_json<T: DeserializeOwned>(&mut self) -> Result<T, JsonError> {
        self.read_json_with_limit(DEFAULT_READ_ALL_LIMIT).await
    }

    /// [`read_json`](Self::read_json) with another limit on the stream's length.
    pub async fn read_json_with_limit<T: DeserializeOwned>(
        &mut self,
        limit: usize,
    ) -> Result<T, JsonError> {
        let bytes = self.read_to_end(limit).await?;
        serde_json::from_slice(&bytes).map_err(JsonError::Decode)
    }
}

impl Session {
    /// Sends `value` as JSON in one datagram (unreliable; too large for a datagram is
    /// [`JsonError::Datagram`]).
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) -> Result<(), tern_async::JsonError> {
    /// session.send_json_datagram(&serde_json::json!({"type": "chat", "text": "hi"}))?;
    /// let message: serde_json::Value = session.recv_json_datagram().await?;
    /// # Ok(()) }
    /// ```
    pub fn send_json_datagram<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), JsonError> {
        let bytes = serde_json::to_vec(value).map_err(JsonError::Encode)?;
        self.send_datagram(bytes)?;
        Ok(())
    }

    /// The next datagram, parsed as JSON. A datagram that is not JSON of type `T` is
    /// [`JsonError::Decode`] and is consumed; the next call takes the next datagram.
    pub async fn recv_json_datagram<T: DeserializeOwned>(&self) -> Result<T, JsonError> {
        let bytes = self.recv_datagram().await?;
        serde_json::from_slice(&bytes).map_err(JsonError::Decode)
    }
}
