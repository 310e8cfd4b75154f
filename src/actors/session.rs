//! The event session: one actor per `/api/v1/events` WebSocket, and its outbound queue.
//!
//! Events do not pass through the actor. Whoever delivers (a room's actor, a voice
//! channel) pushes the event's frame — encoded once, shared by every recipient — straight
//! into the session's [`SessionQueue`] through the [`super::directory::Directory`]. The
//! queue *is* the WebSocket response's body ([`EventBody`]): when the HTTP layer can write,
//! it takes every frame queued at that moment as one buffer, so a burst of events leaves as
//! one TLS record and one system call instead of one per event, with no thread hand-off
//! beyond waking the connection's worker.
//!
//! The actor owns the connection's life: it registers in the directory when it starts and
//! leaves in `stopping`, reads the client's frames (a stream handler), pings every 30 s,
//! closes a client silent for 90 s, and ends the connection on `CloseSession`. A client that
//! lets its queue reach the limit, or that takes nothing for [`WRITE_TIMEOUT`], has its TCP
//! connection reset: nothing of it stays on the server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;

use super::directory::Directory;
use super::Payload;
use crate::model::UserId;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

const PING_EVERY: Duration = Duration::from_secs(30);
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// A client that takes no data for this long, with data waiting, stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the actor looks for a stalled writer.
const STALL_CHECK: Duration = Duration::from_secs(5);
/// How long a close frame may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The TCP socket under a connection, noted when it was accepted, so a session can reset a
/// connection whose client stopped reading (the HTTP layer would otherwise keep trying to
/// flush its buffer to it for ever).
#[derive(Clone, Copy, Debug)]
pub struct ConnSocket {
    fd: RawFd,
    peer: SocketAddr,
}

impl ConnSocket {
    /// For the connection hook: the socket of an accepted connection.
    pub fn of_tcp(tcp: &actix_rt::net::TcpStream) -> Option<ConnSocket> {
        Some(ConnSocket {
            fd: tcp.as_raw_fd(),
            peer: tcp.peer_addr().ok()?,
        })
    }

    /// Resets the connection: unsent data is dropped, the peer gets RST, the server's
    /// pending writes fail and it closes the descriptor. Only if the descriptor still is
    /// this connection (same peer): a number reused by a newer connection is left alone.
    fn reset(&self) {
        // SAFETY: the descriptor is only borrowed for these calls; it is not closed here.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let sock = socket2::SockRef::from(&fd);
        let same = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == self.peer);
        if same {
            tracing::info!(peer = %self.peer, "event connection reset: the client stopped reading");
            let _ = sock.set_linger(Some(Duration::ZERO));
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// How a queue ends.
enum End {
    /// This close frame goes after what is queued.
    Close(Bytes),
    /// The connection is reset; what is queued is dropped.
    Reset,
}

struct QueueState {
    frames: VecDeque<Bytes>,
    /// Events (not control frames) queued: what the limit counts.
    events: usize,
    end: Option<End>,
    /// The body has given out its last frame (or was dropped).
    finished: bool,
    /// When the body last took frames (or the queue was last empty).
    last_drained: Instant,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue is at its limit: the client is too slow (the caller ends the session).
    Full,
    /// The session is ending: nothing more goes out.
    Closed,
}

/// A session's outbound frames, shared by the deliverers (who push) and the response body
/// (which drains). Bounded by `limit` events.
pub struct SessionQueue {
    state: Mutex<QueueState>,
    waker: AtomicWaker,
    limit: usize,
    socket: Option<ConnSocket>,
}

impl SessionQueue {
    fn new(limit: usize, socket: Option<ConnSocket>) -> SessionQueue {
        SessionQueue {
            state: Mutex::new(QueueState {
                frames: VecDeque::new(),
                events: 0,
                end: None,
                finished: false,
                last_drained: Instant::now(),
            }),
            waker: AtomicWaker::new(),
            limit: limit.max(1),
            socket,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event's frame (shared bytes: no copy).
    pub fn push(&self, payload: &Payload) -> Pushed {
        let mut s = self.lock();
        if s.end.is_some() {
            return Pushed::Closed;
        }
        if s.events >= self.limit {
            return Pushed::Full;
        }
        if s.frames.is_empty() {
            s.last_drained = Instant::now();
        }
        s.frames.push_back(payload.frame().clone());
        s.events += 1;
        drop(s);
        self.waker.wake();
        Pushed::Queued
    }

    /// Queues a control or voice frame: dropped (not an error) when the queue is full.
    fn push_frame(&self, frame: Bytes) {
        let mut s = self.lock();
        if s.end.is_some() || s.frames.len() >= self.limit * 2 {
            return;
        }
        if s.frames.is_empty() {
            s.last_drained = Instant::now();
        }
        s.frames.push_back(frame);
        drop(s);
        self.waker.wake();
    }

    /// Ends the queue with a close frame after what is queued.
    fn close(&self, reason: CloseReason) {
        let mut s = self.lock();
        if s.end.is_none() {
            s.end = Some(End::Close(encode(WsMessage::Close(Some(reason)))));
        }
        drop(s);
        self.waker.wake();
    }

    /// Drops what is queued and resets the connection.
    fn reset(&self) {
        let mut s = self.lock();
        s.frames.clear();
        s.end = Some(End::Reset);
        drop(s);
        if let Some(socket) = self.socket {
            socket.reset();
        }
        self.waker.wake();
    }

    /// Frames wait and the client has taken none for `WRITE_TIMEOUT`.
    fn stalled(&self) -> bool {
        let s = self.lock();
        !s.frames.is_empty() && s.last_drained.elapsed() > WRITE_TIMEOUT
    }

    fn finished(&self) -> bool {
        self.lock().finished
    }
}

/// Encodes one WebSocket frame (server to client: unmasked).
fn encode(message: WsMessage) -> Bytes {
    use actix_codec::Encoder;
    let mut buf = BytesMut::new();
    // Encoding a frame into a growable buffer cannot fail.
    let _ = actix_http::ws::Codec::new().encode(message, &mut buf);
    buf.freeze()
}

/// A text frame holding `text`.
pub fn text_frame(text: bytestring::ByteString) -> Bytes {
    encode(WsMessage::Text(text))
}

/// The response body of an event WebSocket: every frame queued when the HTTP layer asks
/// goes out as one buffer.
pub struct EventBody {
    queue: Arc<SessionQueue>,
    done: bool,
}

impl futures_util::Stream for EventBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.queue.waker.register(cx.waker());
        let mut s = this.queue.lock();
        let out = match s.frames.len() {
            0 => None,
            1 => s.frames.pop_front(),
            _ => {
                let size = s.frames.iter().map(Bytes::len).sum();
                let mut buf = BytesMut::with_capacity(size);
                for f in s.frames.drain(..) {
                    buf.extend_from_slice(&f);
                }
                Some(buf.freeze())
            }
        };
        if out.is_some() {
            s.events = 0;
            s.last_drained = Instant::now();
        }
        match (out, s.end.take()) {
            (Some(frames), None) => Poll::Ready(Some(Ok(frames))),
            (out, Some(End::Close(close))) => {
                this.done = true;
                s.finished = true;
                let mut buf = BytesMut::new();
                if let Some(frames) = out {
                    buf.extend_from_slice(&frames);
                }
                buf.extend_from_slice(&close);
                Poll::Ready(Some(Ok(buf.freeze())))
            }
            (_, Some(End::Reset)) => {
                this.done = true;
                s.finished = true;
                Poll::Ready(None)
            }
            (None, None) => Poll::Pending,
        }
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.queue.lock().finished = true;
    }
}

pub struct EventSession {
    id: u64,
    user_id: UserId,
    /// The login session it authenticated with ([`login_tag`]; 0 for a Web API token).
    login: u64,
    queue: Arc<SessionQueue>,
    directory: Arc<Directory>,
    voice: Arc<crate::voice::Router>,
    presence: Arc<super::presence::PresenceBoard>,
    last_heard: Instant,
    /// The close reason to send when the actor stops (`None`: the client went first).
    closing: Option<CloseReason>,
    extensions: super::directory::Extensions,
}

/// A login session's tag in the directory: the first 8 bytes of its id's hash (the start
/// of its public `sessionKey`), so ending a login session can close its event streams.
pub fn login_tag(session_id: &str) -> u64 {
    let h = crate::storage::token_hash(session_id);
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]).max(1)
}

/// The tag of a public `sessionKey` (hex); `None` if it is not one.
pub fn login_tag_of_key(key: &str) -> Option<u64> {
    let bytes = hex::decode(key.get(..16)?).ok()?;
    let h: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(h).max(1))
}

impl EventSession {
    /// Starts the session for an upgraded WebSocket; returns the response body to send.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        stream: actix_ws::MessageStream,
        socket: Option<ConnSocket>,
        user_id: UserId,
        login: u64,
        directory: Arc<Directory>,
        queue_limit: usize,
        max_frame: usize,
        voice: Arc<crate::voice::Router>,
        presence: Arc<super::presence::PresenceBoard>,
        extensions: super::directory::Extensions,
    ) -> EventBody {
        let queue = Arc::new(SessionQueue::new(queue_limit, socket));
        let session = EventSession {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            user_id,
            login,
            queue: queue.clone(),
            directory,
            voice,
            presence,
            last_heard: Instant::now(),
            closing: Some(CloseCode::Normal.into()),
            extensions,
        };
        let stream = stream.max_frame_size(max_frame);
        EventSession::create(move |ctx| {
            ctx.add_stream(stream);
            session
        });
        EventBody { queue, done: false }
    }

    fn send_event(&mut self, ctx: &mut Context<Self>, kind: &str, data: serde_json::Value) {
        if self.queue.push(&super::event_payload(kind, data)) == Pushed::Full {
            self.too_slow(ctx);
        }
    }

    fn too_slow(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            user = self.user_id,
            session = self.id,
            "event client too slow: outbound queue full, disconnecting"
        );
        crate::metrics::EVENT_CLIENTS_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.reset();
        self.closing = None;
        ctx.stop();
    }
}

impl Actor for EventSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.directory.register(
            self.user_id,
            self.id,
            self.login,
            self.queue.clone(),
            ctx.address(),
            self.extensions,
        );
        self.presence.session_opened(self.user_id, self.id);
        ctx.run_interval(STALL_CHECK, |act, ctx| {
            if act.queue.stalled() {
                act.queue.reset();
                act.closing = None;
                ctx.stop();
            }
        });
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > IDLE_LIMIT {
                act.closing = Some(CloseReason {
                    code: CloseCode::Away,
                    description: Some("idle timeout".into()),
                });
                ctx.stop();
            } else {
                act.queue.push_frame(encode(WsMessage::Ping(Bytes::new())));
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.directory.unregister(self.user_id, self.id);
        self.presence.session_closed(self.user_id, self.id);
        if let Some(reason) = self.closing.take() {
            self.queue.close(reason);
            // A client that does not take the close frame either is reset.
            let queue = self.queue.clone();
            actix_rt::spawn(async move {
                tokio::time::sleep(CLOSE_TIMEOUT).await;
                if !queue.finished() {
                    queue.reset();
                }
            });
        }
        Running::Stop
    }
}

impl StreamHandler<Result<WsMessage, ProtocolError>> for EventSession {
    fn handle(&mut self, frame: Result<WsMessage, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match frame {
            Ok(WsMessage::Ping(bytes)) => self.queue.push_frame(encode(WsMessage::Pong(bytes))),
            Ok(WsMessage::Close(_)) => ctx.stop(),
            Ok(WsMessage::Text(text)) => self.client_command(&text, ctx),
            // Voice packets over TCP: straight to the relay, like a UDP datagram.
            Ok(WsMessage::Binary(bytes)) => {
                let out = ctx.address().recipient::<crate::voice::relay::VoiceOut>();
                self.voice.handle_ws(bytes.to_vec(), self.id, out);
            }
            Ok(_) => {}
            Err(e) => {
                self.closing = Some(CloseReason {
                    code: CloseCode::Protocol,
                    description: Some(format!("protocol error: {e}")),
                });
                ctx.stop();
            }
        }
    }

    /// The client's side ended (it closed, or the connection broke).
    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl EventSession {
    /// The event stream is server-to-client; a client may send (see `docs/api.md`):
    /// - `{"type": "Ping"}`, answered with `Pong`;
    /// - `{"type": "AppState", "state": "background"|"foreground"}`: its app went to the
    ///   background or came back (push notifications then go out as if it were not
    ///   connected, or stop); answered with `AppState`;
    /// - `{"type": "Presence", "state": "idle"|"active"}`: its user stepped away or came
    ///   back (a user all of whose clients are idle is `away`); answered with `Presence`;
    /// - `{"type": "Typing", "roomId": N}`: the room's other connected members get
    ///   `UserTyping` (at most once per 3 s per user and room; more are dropped quietly).
    ///
    /// Anything else gets an `Error` event and the connection stays open.
    fn client_command(&mut self, text: &str, ctx: &mut Context<Self>) {
        let v = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => v,
            Err(e) => {
                return self.send_error(ctx, format!("Malformed JSON on the event stream: {e}"))
            }
        };
        let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if kind != "Ping" {
            self.presence.activity(self.user_id);
        }
        match kind {
            "Ping" => self.send_event(ctx, "Pong", serde_json::json!({})),
            "AppState" => match v.get("state").and_then(|s| s.as_str()) {
                Some(state @ ("background" | "foreground")) => {
                    self.directory
                        .set_background(self.user_id, self.id, state == "background");
                    self.send_event(ctx, "AppState", serde_json::json!({ "state": state }));
                }
                _ => self.send_error(
                    ctx,
                    "AppState needs \"state\": \"background\" or \"foreground\"".into(),
                ),
            },
            "Presence" => match v.get("state").and_then(|s| s.as_str()) {
                Some(state @ ("idle" | "active")) => {
                    self.presence
                        .set_idle(self.user_id, self.id, state == "idle");
                    self.send_event(ctx, "Presence", serde_json::json!({ "state": state }));
                }
                _ => self.send_error(
                    ctx,
                    "Presence needs \"state\": \"idle\" or \"active\"".into(),
                ),
            },
            "Typing" => match v.get("roomId").and_then(|r| r.as_u64()) {
                Some(room) => self.typing(room, ctx),
                None => self.send_error(ctx, "Typing needs \"roomId\": a room id".into()),
            },
            _ => self.send_error(ctx, "Unknown command on the event stream".into()),
        }
    }

    fn send_error(&mut self, ctx: &mut Context<Self>, text: String) {
        self.send_event(
            ctx,
            "Error",
            serde_json::json!({ "errorText": text, "httpStatusCode": 400 }),
        );
    }

    /// Relays a typing notice through the presence actor (which checks membership).
    fn typing(&mut self, room: crate::model::RoomId, ctx: &mut Context<Self>) {
        if !self.presence.typing_allowed(self.user_id, room) {
            return;
        }
        let Some(actor) = self.presence.actor().cloned() else {
            return;
        };
        let request = actor.send(super::presence::Typing {
            user: self.user_id,
            room,
        });
        ctx.spawn(actix::fut::wrap_future(request).map(
            |answer, act: &mut EventSession, ctx: &mut Context<Self>| {
                if let Ok(Err(text)) = answer {
                    act.send_error(ctx, text);
                }
            },
        ));
    }
}

impl Handler<crate::voice::relay::VoiceOut> for EventSession {
    type Result = ();
    /// Voice is best effort: when the queue is full the packet is dropped (a late packet
    /// is worthless), and the client is not disconnected for it.
    fn handle(&mut self, msg: crate::voice::relay::VoiceOut, _: &mut Context<Self>) {
        self.queue.push_frame(encode(WsMessage::Binary(msg.0)));
    }
}

/// End the session: with a close frame, or (`code: None`) by resetting a client that fell
/// too far behind.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: Option<CloseCode>,
    pub reason: String,
}

impl Handler<CloseSession> for EventSession {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        match msg.code {
            Some(code) => {
                self.closing = Some(CloseReason {
                    code,
                    description: (!msg.reason.is_empty()).then_some(msg.reason),
                });
                ctx.stop();
            }
            None => self.too_slow(ctx),
        }
    }
}
