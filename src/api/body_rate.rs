//! The request-body floor: a body must keep arriving at an average of at least
//! [`MIN_BYTES_PER_SEC`] after a grace period of [`GRACE`], or the request fails and its
//! connection is dropped. A phone on a poor link sends far faster; a client that sends a
//! login body a byte every few seconds (to hold a connection open for ever) does not.
//! The head of a request has its own timeout (`listener`'s 10 s).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// The lowest average rate a body may arrive at, after the grace period.
pub const MIN_BYTES_PER_SEC: u64 = 1024;
/// How long a body may take before its rate counts.
pub const GRACE: Duration = Duration::from_secs(10);

/// The middleware (on `/api/v1`): wraps every request body (not WebSockets) in a
/// [`RateFloor`].
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // A WebSocket's "body" is its frames, for as long as it lives: not a request body.
    if req.headers().contains_key(actix_web::http::header::UPGRADE) {
        return next.call(req).await;
    }
    let payload = req.take_payload();
    if !matches!(payload, Payload::None) {
        req.set_payload(Payload::Stream {
            payload: Box::pin(RateFloor::new(payload)),
        });
    }
    next.call(req).await
}

/// A body stream that fails once its average rate falls under the floor.
pub struct RateFloor<S> {
    inner: S,
    started: Instant,
    bytes: u64,
    /// When to look at the rate again if nothing arrives.
    check: Pin<Box<Sleep>>,
    failed: bool,
}

impl<S> RateFloor<S> {
    pub fn new(inner: S) -> Self {
        let started = Instant::now();
        RateFloor {
            inner,
            started,
            bytes: 0,
            check: Box::pin(tokio::time::sleep_until(started + GRACE)),
            failed: false,
        }
    }

    fn too_slow(&self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.started);
        elapsed >= GRACE && self.bytes < MIN_BYTES_PER_SEC * elapsed.as_secs()
    }

    fn fail(&mut self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the request body arrived slower than {MIN_BYTES_PER_SEC} bytes/s"),
        )))))
    }
}

impl<S> Stream for RateFloor<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes += chunk.len() as u64;
                if this.too_slow(Instant::now()) {
                    return this.fail();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => {
                // Nothing yet: wake up when the rate is next worth a look (every second
                // after the grace period).
                loop {
                    match this.check.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let now = Instant::now();
                            if this.too_slow(now) {
                                return this.fail();
                            }
                            this.check
                                .as_mut()
                                .reset(now.max(this.started + GRACE) + Duration::from_secs(1));
                        }
                    }
                }
            }
            other => other,
        }
    }
}
