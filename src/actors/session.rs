//! The event-session actor: one per `/api/v1/events` WebSocket. It registers with the
//! registry when it starts and leaves in `stopping`. Events reach the socket through a
//! bounded queue drained by a writer task; a client that lets the queue fill up is
//! disconnected (close code 1008) instead of growing the server's memory. A reader task
//! answers pings, rejects junk with an error event, and ends the session on close or on a
//! protocol error (oversized frames included).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use tokio::sync::mpsc;

use super::registry::{Connect, Disconnect, Registry};
use super::Payload;
use crate::model::UserId;
use crate::voice::relay::VoiceOut;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

const PING_EVERY: Duration = Duration::from_secs(30);
const IDLE_LIMIT_MS: u64 = 90_000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the writer task puts on the socket.
enum Outbound {
    Text(Payload),
    /// A voice packet (the TCP fallback).
    Binary(bytes::Bytes),
    Ping,
}

pub struct EventSession {
    id: u64,
    user_id: UserId,
    registry: Addr<Registry>,
    out: mpsc::Sender<Outbound>,
    close_reason: Arc<Mutex<Option<CloseReason>>>,
    /// Set when the client is dropped for being too slow: the writer then stops writing
    /// what is queued and sends the close frame at once.
    abandon: Arc<std::sync::atomic::AtomicBool>,
    last_seen_ms: Arc<AtomicU64>,
}

impl EventSession {
    /// Starts the actor and its reader/writer tasks for an upgraded WebSocket.
    pub fn start(
        ws: actix_ws::Session,
        stream: actix_ws::MessageStream,
        user_id: UserId,
        registry: Addr<Registry>,
        queue: usize,
        max_frame: usize,
        voice: Arc<crate::voice::Router>,
    ) -> Addr<EventSession> {
        let (out, mut rx) = mpsc::channel::<Outbound>(queue.max(1));
        let close_reason = Arc::new(Mutex::new(None));
        let last_seen_ms = Arc::new(AtomicU64::new(crate::now_ms()));
        let abandon = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer_abandon = abandon.clone();
        let session_id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
        let addr = EventSession {
            id: session_id,
            user_id,
            registry,
            out,
            close_reason: close_reason.clone(),
            abandon,
            last_seen_ms: last_seen_ms.clone(),
        }
        .start();

        // Writer: drains the queue into the socket; when the actor is gone (queue closed)
        // it sends the close frame with the reason the actor left.
        let mut writer_ws = ws.clone();
        actix_rt::spawn(async move {
            loop {
                let next = if writer_abandon.load(Ordering::Relaxed) {
                    None
                } else {
                    rx.recv().await
                };
                match next {
                    Some(Outbound::Text(t)) => {
                        // A socket that accepts nothing for this long is dead or hostile.
                        match tokio::time::timeout(WRITE_TIMEOUT, writer_ws.text(t)).await {
                            Ok(Ok(())) => {}
                            _ => break,
                        }
                    }
                    Some(Outbound::Binary(b)) => {
                        match tokio::time::timeout(WRITE_TIMEOUT, writer_ws.binary(b)).await {
                            Ok(Ok(())) => {}
                            _ => break,
                        }
                    }
                    Some(Outbound::Ping) => {
                        if writer_ws.ping(b"").await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let reason = close_reason.lock().ok().and_then(|mut r| r.take());
                        let _ = writer_ws.close(reason).await;
                        break;
                    }
                }
            }
        });

        // Reader: client frames.
        let reader_addr = addr.clone();
        let voice_out = addr.clone().recipient::<VoiceOut>();
        let mut stream = stream.max_frame_size(max_frame);
        let mut pong_ws = ws;
        actix_rt::spawn(async move {
            while let Some(frame) = stream.recv().await {
                last_seen_ms.store(crate::now_ms(), Ordering::Relaxed);
                match frame {
                    Ok(WsMessage::Ping(bytes)) => {
                        if pong_ws.pong(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Ok(WsMessage::Close(_)) => break,
                    Ok(WsMessage::Text(text)) => {
                        reader_addr.do_send(ClientFrame::Text(text.to_string()))
                    }
                    // Voice packets over TCP: straight to the relay, like a UDP datagram.
                    Ok(WsMessage::Binary(bytes)) => {
                        voice.handle_ws(bytes.to_vec(), session_id, voice_out.clone())
                    }
                    Ok(_) => {}
                    Err(e) => {
                        reader_addr.do_send(CloseSession {
                            code: CloseCode::Protocol,
                            reason: format!("protocol error: {e}"),
                        });
                        return;
                    }
                }
            }
            reader_addr.do_send(CloseSession {
                code: CloseCode::Normal,
                reason: String::new(),
            });
        });
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
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_too_slow(ctx),
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn drop_too_slow(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            user = self.user_id,
            session = self.id,
            "event client too slow: outbound queue full, disconnecting"
        );
        self.set_close(CloseCode::Policy, "too slow: event queue full");
        self.abandon.store(true, Ordering::Relaxed);
        ctx.stop();
    }

    fn set_close(&self, code: CloseCode, reason: &str) {
        if let Ok(mut r) = self.close_reason.lock() {
            if r.is_none() {
                *r = Some(CloseReason {
                    code,
                    description: (!reason.is_empty()).then(|| reason.to_string()),
                });
            }
        }
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

        ctx.run_interval(PING_EVERY, |act, ctx| {
            let idle = crate::now_ms().saturating_sub(act.last_seen_ms.load(Ordering::Relaxed));
            if idle > IDLE_LIMIT_MS {
                act.set_close(CloseCode::Away, "idle timeout");
                ctx.stop();
            } else {
                act.enqueue(ctx, Outbound::Ping);
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
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
        self.set_close(msg.code, &msg.reason);
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
