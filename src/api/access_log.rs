//! The access log: one line per HTTP request on the target `confab::access` — method, path
//! (never the query string, which may carry a token), status, duration, the authenticated
//! user and the client address (`--trusted-proxy` decides whether `X-Forwarded-For`
//! counts). Off with `--log-level info,confab::access=off`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;

use super::State;

/// Set by authentication: whose request it was.
#[derive(Debug, Clone, Copy)]
pub struct AccessUser(pub u64);

pub async fn log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !tracing::enabled!(target: "confab::access", tracing::Level::INFO) {
        return next.call(req).await;
    }
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.path().to_string();
    let client = match req.app_data::<State>() {
        Some(state) => state.client_ip(req.request()),
        None => req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    };
    let result = next.call(req).await;
    let micros = started.elapsed().as_micros() as u64;
    let (status, user) = match &result {
        Ok(res) => (
            res.status().as_u16(),
            res.request().extensions().get::<AccessUser>().map(|u| u.0),
        ),
        Err(e) => (e.as_response_error().status_code().as_u16(), None),
    };
    let client = crate::canonical_ip(client);
    match user {
        Some(user) => {
            tracing::info!(target: "confab::access", %method, %path, status, ms = micros as f64 / 1000.0, user, %client, "request")
        }
        None => {
            tracing::info!(target: "confab::access", %method, %path, status, ms = micros as f64 / 1000.0, %client, "request")
        }
    }
    result
}
