//! The HTTP API: the Virola Web API v1 under `/api/v1`, Confab's extensions beside it
//! (documented in `docs/api.md`), the event WebSocket, and optionally a static web root.
//! Handlers are small; they authenticate, validate, then read from storage or send the
//! write to the room's actor.

pub mod access_log;
pub mod account;
pub mod attachments;
pub mod auth;
pub mod avatar;
pub mod backup;
pub mod body_rate;
pub mod error;
pub mod events;
pub mod health;
pub mod issues;
pub mod messages;
pub mod mfa;
pub mod origin;
pub mod permissions;
pub mod push;
pub mod rooms;
pub mod search;
pub mod session;
pub mod sync;
pub mod throttle;
pub mod users;
pub mod voice;
pub mod webclient;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::Registry;
use crate::config::Limits;
use crate::storage::Store;
pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub store: Arc<Store>,
    pub registry: Addr<Registry>,
    /// Who is connected: events to users go through it.
    pub directory: Arc<crate::actors::Directory>,
    /// The running room actors (the registry starts them).
    pub rooms: Arc<crate::actors::registry::RoomAddrs>,
    pub limits: Limits,
    pub login_throttle: throttle::LoginThrottle,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Origins besides the server's own that may use a session cookie (`--allowed-origin`).
    pub allowed_origins: Vec<String>,
    /// When the server's TLS certificate expires (seconds since the epoch; `i64::MIN`:
    /// unknown), for health; moves when SIGHUP reloads the certificate.
    pub certificate_not_after: Arc<std::sync::atomic::AtomicI64>,
    /// Bounds concurrent argon2 work (each hash takes ~19 MiB and real CPU).
    pub hash_slots: tokio::sync::Semaphore,
    /// Bounds concurrent thumbnail decoding (memory).
    pub thumbnail_slots: tokio::sync::Semaphore,
    pub started: Instant,
    pub voice: VoiceHandle,
    /// The server's VAPID public key (base64url), for browsers subscribing to Web Push.
    pub vapid_public_key: String,
    /// The full-text index (`None`: it could not be opened; search answers 503).
    pub search: Option<Arc<crate::search::SearchIndex>>,
    /// Who is online, away or offline, and who may send a typing notice now.
    pub presence: Arc<crate::actors::presence::PresenceBoard>,
}

/// What the API needs of voice: the hub (channels) and the relay (its counters).
#[derive(Clone)]
pub struct VoiceHandle {
    pub hub: Addr<crate::actors::voice::VoiceHub>,
    pub router: Arc<crate::voice::Router>,
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        registry: Addr<Registry>,
        directory: Arc<crate::actors::Directory>,
        rooms: Arc<crate::actors::registry::RoomAddrs>,
        limits: Limits,
        voice: VoiceHandle,
    ) -> Self {
        AppState {
            directory,
            rooms,
            login_throttle: throttle::LoginThrottle::new(
                limits.login_failures,
                limits.login_window_secs,
            ),
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            certificate_not_after: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            vapid_public_key: String::new(),
            search: None,
            presence: Arc::default(),
            store,
            registry,
            limits,
            hash_slots: tokio::sync::Semaphore::new(2),
            thumbnail_slots: tokio::sync::Semaphore::new(1),
            started: Instant::now(),
            voice,
        }
    }

    /// Believe `X-Forwarded-For` from these proxies.
    pub fn trusting(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The VAPID public key browsers subscribe with.
    pub fn with_vapid_key(mut self, public_key: String) -> Self {
        self.vapid_public_key = public_key;
        self
    }

    /// The search index.
    pub fn with_search(mut self, index: Option<Arc<crate::search::SearchIndex>>) -> Self {
        self.search = index;
        self
    }

    /// The presence board the event sessions report to.
    pub fn with_presence(mut self, board: Arc<crate::actors::presence::PresenceBoard>) -> Self {
        self.presence = board;
        self
    }

    /// The TLS certificate's expiry, for `server-health`.
    pub fn with_certificate_expiry(mut self, not_after: Arc<std::sync::atomic::AtomicI64>) -> Self {
        self.certificate_not_after = not_after;
        self
    }

    /// Accept session cookies from these origins too.
    pub fn allowing_origins(mut self, origins: Vec<String>) -> Self {
        self.allowed_origins = origins;
        self
    }

    /// A user as the API shows it: the record plus what others see of their presence.
    pub fn user_view(&self, user: &crate::storage::UserRecord) -> crate::model::User {
        let mut view = user.to_api();
        view.presence = Some(self.presence.presence_of(user.user_id));
        view
    }

    /// The client's address (see [`throttle::client_ip`]).
    pub fn client_ip(&self, req: &HttpRequest) -> std::net::IpAddr {
        throttle::client_ip(req, &self.trusted_proxies)
    }

    /// The room's actor (started on demand), or 404 if the room does not exist.
    pub async fn room_actor(
        &self,
        room_id: u64,
    ) -> Result<Addr<crate::actors::RoomActor>, ApiError> {
        if let Some(addr) = self.rooms.get(room_id) {
            return Ok(addr);
        }
        self.registry
            .send(crate::actors::registry::GetRoom(room_id))
            .await??
            .ok_or_else(|| ApiError::room_not_found(room_id))
    }

    /// Sends `msg` to the room's actor and answers its reply. If the actor was retiring
    /// (idle), the message goes to the room's next actor instead.
    pub async fn in_room<M, R>(&self, room_id: u64, msg: M) -> Result<R, ApiError>
    where
        M: actix::Message<Result = Result<R, ApiError>> + Clone + Send + 'static,
        R: Send + 'static,
        crate::actors::RoomActor: actix::Handler<M>,
    {
        for _ in 0..3 {
            match self.room_actor(room_id).await?.send(msg.clone()).await? {
                Err(ApiError::Retry) => continue,
                other => return other,
            }
        }
        Err(ApiError::Retry)
    }
}

pub type State = web::Data<AppState>;

/// Registers every route. `web_root` serves static files at `/` when given.
pub fn configure(cfg: &mut web::ServiceConfig, limits: &Limits, web_root: Option<PathBuf>) {
    let json = web::JsonConfig::default()
        .limit(limits.max_json_body)
        // Only JSON is JSON: a form (`text/plain`, urlencoded) cannot pose as a request body.
        .content_type(|m: actix_web::mime::Mime| {
            m.subtype() == actix_web::mime::JSON || m.suffix() == Some(actix_web::mime::JSON)
        })
        .content_type_required(true)
        .error_handler(|err, _req| error::json_error(err).into());
    let path = web::PathConfig::default().error_handler(|err, _req| {
        ApiError::BadRequest(format!("Invalid id in the URL: {err}")).into()
    });
    let query = web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::BadRequest(format!("Invalid query parameters: {err}")).into()
    });
    cfg.app_data(json).app_data(path).app_data(query);
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
    // Routes are matched in order (each with a regex): the busiest come first.
    cfg.service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(origin::guard))
            .wrap(actix_web::middleware::from_fn(body_rate::guard))
            .route("/rooms/{roomId}/messages", web::get().to(messages::history))
            .route("/rooms/{roomId}/messages", web::post().to(messages::post))
            .route("/events", web::get().to(events::events))
            .route(
                "/messages/{messageId}/read",
                web::post().to(messages::mark_read),
            )
            .route(
                "/messages/{messageId}/comments",
                web::get().to(messages::comments),
            )
            .route(
                "/messages/{messageId}/comments",
                web::post().to(messages::post_comment),
            )
            .route("/status", web::get().to(session::status))
            .route("/messages/{messageId}", web::get().to(messages::get_one))
            .route("/messages/{messageId}", web::delete().to(messages::delete))
            .route("/messages/{messageId}", web::put().to(messages::edit))
            .route(
                "/messages/{messageId}/reactions",
                web::post().to(messages::react),
            )
            .route("/sync", web::get().to(sync::sync))
            .route("/search", web::get().to(search::search))
            .route("/issues", web::get().to(issues::list))
            .route("/meetings", web::get().to(issues::meetings))
            .route("/meetings.ics", web::get().to(issues::calendar))
            .route(
                "/meetings/{messageId}.ics",
                web::get().to(issues::one_calendar),
            )
            .route("/presence", web::put().to(users::set_status))
            .route("/rooms", web::get().to(rooms::list))
            .route("/rooms", web::post().to(rooms::create))
            .route("/login", web::post().to(session::login))
            .route("/logout", web::post().to(session::logout))
            .route("/web-api-token", web::post().to(session::create_token))
            .route("/server-health", web::get().to(health::server_health))
            .route("/backup", web::get().to(backup::backup))
            .route("/push/devices", web::post().to(push::register))
            .route("/push/devices", web::get().to(push::list))
            .route(
                "/push/devices/{deviceId}",
                web::delete().to(push::unregister),
            )
            .route("/push/settings", web::get().to(push::settings))
            .route("/push/settings", web::put().to(push::set_settings))
            .route(
                "/push/vapid-public-key",
                web::get().to(push::vapid_public_key),
            )
            .route("/push/test", web::post().to(push::test))
            .route("/users", web::get().to(users::list))
            .route("/users", web::post().to(users::create))
            .route(
                "/users/{userId}/avatar.jpg",
                web::put().to(avatar::put_user_avatar),
            )
            .route(
                "/rooms/{roomId}/avatar.jpg",
                web::put().to(avatar::put_room_avatar),
            )
            .route("/users/{userId}/suspend", web::post().to(users::suspend))
            .route(
                "/users/{userId}/reactivate",
                web::post().to(users::reactivate),
            )
            .route(
                "/users/{userId}/password",
                web::post().to(account::set_password),
            )
            .route("/users/{userId}/totp", web::post().to(mfa::begin))
            .route("/users/{userId}/totp", web::delete().to(mfa::disable))
            .route("/users/{userId}/totp/confirm", web::post().to(mfa::confirm))
            .route("/users/{userId}", web::patch().to(account::update_profile))
            .route("/users/{userId}", web::delete().to(account::remove_user))
            .route("/sessions", web::get().to(account::sessions))
            .route("/sessions", web::delete().to(account::end_all_sessions))
            .route(
                "/sessions/{sessionKey}",
                web::delete().to(account::end_session),
            )
            .route("/users/{userId}/admin", web::post().to(users::set_admin))
            .route(
                "/users/{userId}/avatar.jpg",
                web::get().to(avatar::user_avatar),
            )
            .route("/rooms/join", web::post().to(rooms::join))
            .route("/rooms/{roomId}", web::patch().to(rooms::update))
            .route("/rooms/{roomId}/leave", web::post().to(rooms::leave))
            .route("/rooms/{roomId}/pin", web::put().to(rooms::pin))
            .route(
                "/rooms/{roomId}/members/{userId}",
                web::delete().to(rooms::remove_member),
            )
            .route(
                "/rooms/{roomId}/members/{userId}",
                web::put().to(rooms::set_member_role),
            )
            .route(
                "/rooms/{roomId}/avatar.jpg",
                web::get().to(avatar::room_avatar),
            )
            .route("/rooms/{roomId}/members", web::get().to(rooms::members))
            .route("/rooms/{roomId}/members", web::post().to(rooms::add_member))
            .route(
                "/room-permissions/{roomId}",
                web::get().to(permissions::room),
            )
            .route(
                "/room-permissions/{roomId}",
                web::put().to(permissions::set_room),
            )
            .route("/permissions", web::get().to(permissions::global))
            .route("/permissions", web::put().to(permissions::set_global))
            .route(
                "/messages/{messageId}/attachments",
                web::post().to(attachments::upload),
            )
            .route(
                "/attachments/{attachmentId}",
                web::get().to(attachments::metadata),
            )
            .route(
                "/attachments/{attachmentId}",
                web::delete().to(attachments::delete),
            )
            .route(
                "/attachments/{attachmentId}/{fileName}",
                web::get().to(attachments::download),
            )
            .route(
                "/thumbnails/{attachmentId}",
                web::get().to(attachments::thumbnail),
            )
            .route("/rooms/{roomId}/voice", web::post().to(voice::join))
            .route("/rooms/{roomId}/voice", web::delete().to(voice::leave))
            .route("/rooms/{roomId}/voice", web::get().to(voice::participants))
            .default_service(web::to(api_not_found)),
    );
    match web_root {
        Some(root) => {
            let inside = inside_root(&root);
            cfg.service(
                actix_files::Files::new("/", root)
                    .index_file("index.html")
                    .prefer_utf8(true)
                    .path_filter(move |rel, _| inside(rel))
                    .default_handler(web::to(not_found)),
            );
        }
        // Confab Web, embedded in the binary.
        None => {
            cfg.default_service(web::to(webclient::serve));
        }
    }
}

/// Whether a path under the web root resolves (symlinks followed) to a file inside it: a
/// link to `/etc/passwd` placed in the root is not served. Paths that do not exist pass,
/// and get their 404 from the file service.
fn inside_root(root: &std::path::Path) -> impl Fn(&std::path::Path) -> bool + 'static {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    move |rel| {
        let full = root.join(rel);
        let ok = |p: &std::path::Path| p.canonicalize().map_or(true, |c| c.starts_with(&root));
        // A directory is answered with its index file: that must be inside too.
        ok(&full) && (!full.is_dir() || ok(&full.join("index.html")))
    }
}

async fn api_not_found(req: HttpRequest) -> HttpResponse {
    let e = ApiError::NotFound(format!("No API endpoint {} {}", req.method(), req.path()));
    actix_web::ResponseError::error_response(&e)
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let e = ApiError::NotFound(format!(
        "Nothing at {}. This is a Confab server: its web client is at /, the API under /api/v1.",
        req.path()
    ));
    actix_web::ResponseError::error_response(&e)
}

/// The request's `Idempotency-Key` header (extension), validated, for `user_id`.
pub fn idempotency_key(
    req: &HttpRequest,
    user_id: u64,
) -> Result<Option<crate::storage::IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::BadRequest("Idempotency-Key must be 1-128 printable ASCII characters".into())
    })?;
    crate::storage::IdempotencyKey::parse(user_id, text)
        .map(Some)
        .map_err(ApiError::BadRequest)
}

/// `{"httpStatusCode": 200}` plus the given fields.
pub fn ok_json(mut body: serde_json::Value) -> HttpResponse {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("httpStatusCode".into(), 200.into());
    }
    HttpResponse::Ok().json(body)
}
