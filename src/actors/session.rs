//! The event-session actor: one per `/api/v1/events` WebSocket. It registers with the
//! registry when it starts and leaves in `stopping`; events reach it as `Deliver` and go
//! into a bounded queue. A client that lets the queue fill up is dropped instead of growing
//! the server's memory.
//!
//! Beside the actor runs one task per connection that owns the socket: it selects over the
//! client's frames, the outbound queue, the heartbeat and the actor's close signal. Every
//! way out of that loop ends the connection: a normal close sends a close frame (briefly);
//! a client that stops reading (a write that does not finish within [`WRITE_TIMEOUT`], or a
//! full queue) has its TCP connection reset, so no socket, descriptor or kernel buffer is
//! left behind.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use tokio::sync::{mpsc, oneshot};

use super::registry::{Connect, Disconnect, Registry};
use super::Payload;
use crate::model::UserId;
use crate::voice::relay::VoiceOut;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

const PING_EVERY: Duration = Duration::from_secs(30);
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// A write that the client does not take within this long means it stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a close frame may take on a normal close.
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
    /// For the `on_connect` hook: the socket of an accepted TLS connection.
    pub fn of(conn: &dyn std::any::Any) -> Option<ConnSocket> {
        let tls =
            conn.downcast_ref::<actix_tls::accept::openssl::TlsStream<actix_rt::net::TcpStream>>()?;
        let tcp = tls.get_ref();
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
            let _ = sock.set_linger(Some(Duration::ZERO));
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What the connection task puts on the socket.
enum Outbound {
    Text(Payload),
    /// A voice packet (the TCP fallback).
    Binary(bytes::Bytes),
}

/// How the connection ends.
enum Ending {
    /// Send this close frame (if the client takes it), then close.
    Close(CloseReason),
    /// The client is gone (it closed, or the transport failed).
    Gone,
    /// The client stopped reading: reset the connection.
    Reset(&'static str),
}

pub struct EventSession {
    id: u64,
    user_id: UserId,
    registry: Addr<Registry>,
    out: mpsc::Sender<Outbound>,
    /// Tells the connection task to end (with this close reason, or reset when `None`).
    end: Option<oneshot::Sender<Option<CloseReason>>>,
}

/// Everything the connection task owns.
struct Connection {
    ws: actix_ws::Session,
    stream: actix_ws::MessageStream,
    rx: mpsc::Receiver<Outbound>,
    end: oneshot::Receiver<Option<CloseReason>>,
    socket: Option<ConnSocket>,
    session: Addr<EventSession>,
    session_id: u64,
    voice: Arc<crate::voice::Router>,
}

impl EventSession {
    /// Starts the actor and its connection task for an upgraded WebSocket.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        ws: actix_ws::Session,
        stream: actix_ws::MessageStream,
        socket: Option<ConnSocket>,
        user_id: UserId,
        registry: Addr<Registry>,
        queue: usize,
        max_frame: usize,
        voice: Arc<crate::voice::Router>,
    ) -> Addr<EventSession> {
        let (out, rx) = mpsc::channel::<Outbound>(queue.max(1));
        let (end_tx, end_rx) = oneshot::channel();
        let session_id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
        let addr = EventSession {
            id: session_id,
            user_id,
            registry,
            out,
            end: Some(end_tx),
        }
        .start();
        let conn = Connection {
            ws,
            stream: stream.max_frame_size(max_frame),
            rx,
            end: end_rx,
            socket,
            session: addr.clone(),
            session_id,
            voice,
        };
        actix_rt::spawn(conn.run());
        addr
    }

    fn send_error(&mut self, ctx: &mut Context<Self>, status: u16, text: &str) {
        let payload = super::event_payload(
            "Error",
            serde_json::json!({ "errorText": text, "httpStatusCode": status }),
        );
        self.enqueue(ctx, Outbound::Text(payload));
    }

    fn enqueue(&mut self, ctx: &mut Context<Self>, item: Outbound) {
        match self.out.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(
                    user = self.user_id,
                    session = self.id,
                    "event client too slow: outbound queue full, disconnecting"
                );
                self.end_with(None);
                ctx.stop();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    /// Tells the connection task to end (a close frame, or a reset when `None`).
    fn end_with(&mut self, reason: Option<CloseReason>) {
        if let Some(end) = self.end.take() {
            let _ = end.send(reason);
        }
    }
}

impl Connection {
    async fn run(mut self) {
        let ending = self.serve().await;
        // The actor goes too (it may have gone first: then this is a no-op).
        self.session.do_send(Ended);
        // The client's half stays open until the close frame is out: dropping it first would
        // end the connection before the frame leaves.
        let Connection {
            ws, socket, stream, ..
        } = self;
        match ending {
            Ending::Close(reason) => {
                let closed = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(reason))).await;
                if closed.is_err() {
                    reset(socket, "close frame not taken");
                }
            }
            Ending::Gone => drop(ws),
            Ending::Reset(why) => {
                drop(ws);
                reset(socket, why);
            }
        }
        drop(stream);
    }

    async fn serve(&mut self) -> Ending {
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_heard = Instant::now();
        let voice_out = self.session.clone().recipient::<VoiceOut>();
        loop {
            tokio::select! {
                // The actor's close reason first: when it stops, its queue closes at the same
                // moment, and the reason must win.
                biased;
                end = &mut self.end => {
                    return match end {
                        Ok(Some(reason)) => Ending::Close(reason),
                        Ok(None) => Ending::Reset("too slow: event queue full"),
                        Err(_) => Ending::Close(CloseCode::Normal.into()),
                    };
                }
                frame = self.stream.recv() => {
                    last_heard = Instant::now();
                    match frame {
                        None => return Ending::Gone,
                        Some(Ok(WsMessage::Ping(bytes))) => {
                            if !timed(self.ws.pong(&bytes)).await {
                                return Ending::Reset("does not read");
                            }
                        }
                        Some(Ok(WsMessage::Close(_))) => {
                            return Ending::Close(CloseCode::Normal.into());
                        }
                        Some(Ok(WsMessage::Text(text))) => {
                            self.session.do_send(ClientFrame::Text(text.to_string()));
                        }
                        // Voice packets over TCP: straight to the relay, like a UDP datagram.
                        Some(Ok(WsMessage::Binary(bytes))) => {
                            self.voice.handle_ws(bytes.to_vec(), self.session_id, voice_out.clone());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            return Ending::Close(CloseReason {
                                code: CloseCode::Protocol,
                                description: Some(format!("protocol error: {e}")),
                            });
                        }
                    }
                }
                item = self.rx.recv() => {
                    let Some(item) = item else {
                        return Ending::Close(CloseCode::Normal.into());
                    };
                    let written = match item {
                        Outbound::Text(t) => timed(self.ws.text(t)).await,
                        Outbound::Binary(b) => timed(self.ws.binary(b)).await,
                    };
                    if !written {
                        return Ending::Reset("stopped reading");
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > IDLE_LIMIT {
                        return Ending::Close(CloseReason {
                            code: CloseCode::Away,
                            description: Some("idle timeout".into()),
                        });
                    }
                    if !timed(self.ws.ping(b"")).await {
                        return Ending::Reset("does not read");
                    }
                }
            }
        }
    }
}

/// One write to the socket; false if it failed or did not finish in time.
async fn timed(write: impl std::future::Future<Output = Result<(), actix_ws::Closed>>) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

fn reset(socket: Option<ConnSocket>, why: &str) {
    if let Some(s) = socket {
        tracing::info!(peer = %s.peer, "event connection reset: {why}");
        s.reset();
    }
}

impl Actor for EventSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.registry.do_send(Connect {
            user_id: self.user_id,
            session_id: self.id,
            addr: ctx.address(),
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.end_with(Some(CloseCode::Normal.into()));
        self.registry.do_send(Disconnect {
            user_id: self.user_id,
            session_id: self.id,
        });
        Running::Stop
    }
}

/// An event for this session's user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Payload);

impl Handler<Deliver> for EventSession {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.enqueue(ctx, Outbound::Text(msg.0));
    }
}

impl Handler<VoiceOut> for EventSession {
    type Result = ();
    /// Voice is best effort: when the queue is full the packet is dropped (a late packet
    /// is worthless), and the client is not disconnected for it.
    fn handle(&mut self, msg: VoiceOut, _: &mut Context<Self>) {
        let _ = self.out.try_send(Outbound::Binary(msg.0));
    }
}

/// End the session with a close frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: CloseCode,
    pub reason: String,
}

impl Handler<CloseSession> for EventSession {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.end_with(Some(CloseReason {
            code: msg.code,
            description: (!msg.reason.is_empty()).then_some(msg.reason),
        }));
        ctx.stop();
    }
}

/// The connection ended (from its task).
#[derive(Message)]
#[rtype(result = "()")]
struct Ended;

impl Handler<Ended> for EventSession {
    type Result = ();
    fn handle(&mut self, _: Ended, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A frame the client sent. The event stream is server-to-client; the only command a client
/// may send is `{"type": "Ping"}` (answered with `Pong`). Anything else gets an `Error`
/// event and the connection stays open.
#[derive(Message)]
#[rtype(result = "()")]
enum ClientFrame {
    Text(String),
}

impl Handler<ClientFrame> for EventSession {
    type Result = ();
    fn handle(&mut self, msg: ClientFrame, ctx: &mut Context<Self>) {
        match msg {
            ClientFrame::Text(text) => {
                let parsed: Result<serde_json::Value, _> = serde_json::from_str(&text);
                match parsed {
                    Ok(v) if v.get("type").and_then(|t| t.as_str()) == Some("Ping") => {
                        let pong = super::event_payload("Pong", serde_json::json!({}));
                        self.enqueue(ctx, Outbound::Text(pong));
                    }
                    Ok(_) => self.send_error(ctx, 400, "Unknown command on the event stream"),
                    Err(e) => self.send_error(
                        ctx,
                        400,
                        &format!("Malformed JSON on the event stream: {e}"),
                    ),
                }
            }
        }
    }
}
