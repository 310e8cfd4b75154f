//! The event WebSocket as a client reads it: server events one at a time, binary (voice)
//! frames, and why the stream ended.

use std::time::Duration;

use actix_codec::Framed;
use awc::ws;
use futures_util::{SinkExt, StreamExt};

use super::ClientError;
use crate::model::ServerEvent;

/// The event WebSocket: server events, one at a time.
pub struct EventStream {
    pub(super) framed: Framed<awc::BoxedSocket, ws::Codec>,
}

/// What arrives on the event stream.
pub enum Incoming {
    Event(ServerEvent),
    Binary(bytes::Bytes),
    Closed,
}

/// Why an event stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: Option<String>,
}

impl EventStream {
    /// The next event; `Ok(None)` when the server closed the stream (see [`Self::next_frame`]
    /// for the close reason).
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        match self.next_frame().await? {
            Ok(ev) => Ok(Some(ev)),
            Err(_) => Ok(None),
        }
    }

    /// The next event, or how the stream closed.
    pub async fn next_frame(&mut self) -> Result<Result<ServerEvent, Closed>, ClientError> {
        loop {
            let frame = match self.framed.next().await {
                None => {
                    return Ok(Err(Closed {
                        code: None,
                        reason: None,
                    }))
                }
                Some(f) => f.map_err(|e| ClientError::Transport(e.to_string()))?,
            };
            match frame {
                ws::Frame::Text(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .map(Ok)
                        .map_err(|e| ClientError::Decode(format!("event is not JSON: {e}")));
                }
                ws::Frame::Ping(p) => {
                    let _ = self.framed.send(ws::Message::Pong(p)).await;
                }
                ws::Frame::Close(reason) => {
                    return Ok(Err(Closed {
                        code: reason.as_ref().map(|r| u16::from(r.code)),
                        reason: reason.and_then(|r| r.description),
                    }))
                }
                _ => {}
            }
        }
    }

    /// The next text frame as raw bytes, undecoded (for load generators); `Ok(None)` on
    /// close.
    pub async fn next_raw(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        loop {
            let frame = match self.framed.next().await {
                None => return Ok(None),
                Some(f) => f.map_err(|e| ClientError::Transport(e.to_string()))?,
            };
            match frame {
                ws::Frame::Text(bytes) => return Ok(Some(bytes)),
                ws::Frame::Ping(p) => {
                    let _ = self.framed.send(ws::Message::Pong(p)).await;
                }
                ws::Frame::Close(_) => return Ok(None),
                _ => {}
            }
        }
    }

    /// The next event or binary frame (voice over the TCP fallback); `Incoming::Closed`
    /// when the server closed the stream.
    pub async fn next_incoming(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let frame = match self.framed.next().await {
                None => return Ok(Incoming::Closed),
                Some(f) => f.map_err(|e| ClientError::Transport(e.to_string()))?,
            };
            match frame {
                ws::Frame::Text(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .map(Incoming::Event)
                        .map_err(|e| ClientError::Decode(format!("event is not JSON: {e}")));
                }
                ws::Frame::Binary(bytes) => return Ok(Incoming::Binary(bytes)),
                ws::Frame::Ping(p) => {
                    let _ = self.framed.send(ws::Message::Pong(p)).await;
                }
                ws::Frame::Close(_) => return Ok(Incoming::Closed),
                _ => {}
            }
        }
    }

    /// The next event within `timeout` (`Ok(None)` on timeout or close).
    pub async fn next_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ServerEvent>, ClientError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Sends a raw text frame (the server answers `{"type":"Ping"}` with `Pong`).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.framed
            .send(ws::Message::Text(text.to_string().into()))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// Sends a raw binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.framed
            .send(ws::Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    pub async fn close(mut self) {
        let _ = self.framed.send(ws::Message::Close(None)).await;
    }
}
