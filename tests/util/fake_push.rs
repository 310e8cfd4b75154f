//! Fake push providers for the tests: real TLS servers on loopback (actix-web, HTTP/1.1
//! and HTTP/2 by ALPN) playing FCM (its OAuth token endpoint and `messages:send`), APNs
//! (HTTP/2 only) and a Web Push service. Each checks what a real one checks — the JWT
//! signatures against the public keys, the Web Push payload decrypted with the
//! subscription's private key — records what it received, and answers as it is told.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use openssl::ssl::{SslAcceptor, SslMethod};
use serde_json::{json, Value};

/// How a fake answers a send.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Ok,
    /// The device is gone (FCM 404 UNREGISTERED, APNs 410, Web Push 410).
    Gone,
    /// 503 Service Unavailable.
    Down,
    /// 429 with `Retry-After: secs`.
    Throttle(u64),
}

/// One notification a fake accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The device: FCM or APNs token, or the Web Push endpoint's last path segment.
    pub device: String,
    /// What the provider got (FCM: `message`; APNs: the JSON body; Web Push: the
    /// decrypted JSON payload).
    pub body: Value,
    pub headers: HashMap<String, String>,
    pub http2: bool,
}

#[derive(Default)]
pub struct FakeState {
    pub received: Vec<Received>,
    /// Every request refused (how many, and why), for the retry tests.
    pub refused: Vec<String>,
    /// Per device (or "*" for all): how to answer.
    pub answers: HashMap<String, Answer>,
    pub tokens_issued: u64,
    /// Web Push: each subscriber's subscription JSON, by id.
    pub subscriptions: HashMap<String, Value>,
}

pub type Shared = Arc<Mutex<FakeState>>;

pub struct Fake {
    pub addr: SocketAddr,
    pub state: Shared,
}

impl Fake {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
    pub fn set(&self, device: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(device.into(), answer);
    }
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
    pub fn received_for(&self, device: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.device == device)
            .collect()
    }
    pub fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }
}

fn answer_for(state: &Shared, device: &str) -> Answer {
    let s = state.lock().unwrap();
    s.answers
        .get(device)
        .or_else(|| s.answers.get("*"))
        .cloned()
        .unwrap_or(Answer::Ok)
}

fn headers_of(req: &HttpRequest) -> HashMap<String, String> {
    req.headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

/// The keys and files the fakes and the server share.
pub struct PushKeys {
    pub dir: PathBuf,
    /// The fakes' certificate: the server trusts it through `--push-ca-file`.
    pub ca_file: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    pub fcm_public_pem: Vec<u8>,
    pub apns_public_pem: Vec<u8>,
    pub apns_key_file: PathBuf,
}

impl PushKeys {
    pub fn new(dir: &Path) -> PushKeys {
        let (cert, key) =
            confab::tls::generate_self_signed(&["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let cert_pem = cert.to_pem().unwrap();
        let key_pem = key.private_key_to_pem_pkcs8().unwrap();
        let ca_file = dir.join("push-ca.pem");
        std::fs::write(&ca_file, &cert_pem).unwrap();
        let rsa =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let fcm_public_pem = rsa.public_key_to_pem().unwrap();
        let fcm_private = String::from_utf8(rsa.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let ec = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap())
            .unwrap();
        let apns_key_file = dir.join("AuthKey_TESTKEY123.p8");
        std::fs::write(&apns_key_file, ec.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let keys = PushKeys {
            dir: dir.to_path_buf(),
            ca_file,
            cert_pem,
            key_pem,
            fcm_public_pem,
            apns_public_pem: ec.public_key_to_pem().unwrap(),
            apns_key_file,
        };
        std::fs::write(dir.join("fcm-private.pem"), fcm_private.as_bytes()).unwrap();
        keys
    }

    /// A service-account JSON naming the fake FCM's token endpoint.
    pub fn service_account(&self, fcm: &Fake) -> PathBuf {
        let private_key = std::fs::read_to_string(self.dir.join("fcm-private.pem")).unwrap();
        let path = self.dir.join("service-account.json");
        std::fs::write(
            &path,
            json!({
                "type": "service_account",
                "project_id": "confab-test",
                "private_key_id": "key-1",
                "private_key": private_key,
                "client_email": "push@confab-test.iam.gserviceaccount.com",
                "token_uri": format!("{}/token", fcm.url()),
            })
            .to_string(),
        )
        .unwrap();
        path
    }

    fn acceptor(&self) -> openssl::ssl::SslAcceptorBuilder {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate(&openssl::x509::X509::from_pem(&self.cert_pem).unwrap())
            .unwrap();
        b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(&self.key_pem).unwrap())
            .unwrap();
        b
    }
}

/// Runs `app` on a TLS port of its own, on a thread with its own runtime.
fn serve<F>(keys: &PushKeys, state: Shared, routes: F) -> Fake
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let acceptor = keys.acceptor();
    let (tx, rx) = std::sync::mpsc::channel();
    let s = state.clone();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(s.clone()))
                    .app_data(web::PayloadConfig::new(1 << 20))
                    .configure(routes.clone())
            })
            .workers(1)
            .bind_openssl("127.0.0.1:0", acceptor)
            .unwrap();
            let _ = tx.send(server.addrs()[0]);
            server.run().await.unwrap();
        });
    });
    Fake {
        addr: rx.recv().unwrap(),
        state,
    }
}

fn refusal(state: &Shared, answer: &Answer, what: &str) -> Option<HttpResponse> {
    let mut s = state.lock().unwrap();
    match answer {
        Answer::Down => {
            s.refused.push(format!("503 {what}"));
            Some(HttpResponse::ServiceUnavailable().json(json!({
                "error": { "code": 503, "status": "UNAVAILABLE", "message": "down" }
            })))
        }
        Answer::Throttle(secs) => {
            s.refused.push(format!("429 {what}"));
            Some(
                HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", secs.to_string()))
                    .json(json!({
                        "error": { "code": 429, "status": "RESOURCE_EXHAUSTED",
                                   "details": [{ "errorCode": "QUOTA_EXCEEDED" }] }
                    })),
            )
        }
        _ => None,
    }
}

/// A fake FCM: `POST /token` (OAuth2 JWT bearer grant, RS256 checked) and
/// `POST /v1/projects/{project}/messages:send` (with a token it issued).
pub fn fake_fcm(keys: &PushKeys) -> Fake {
    let public = keys.fcm_public_pem.clone();
    let state: Shared = Arc::default();
    // The token endpoint's URL is in the service account, which needs the address first:
    // the audience is checked against the path only.
    serve(keys, state, move |cfg| {
        let public = public.clone();
        cfg.route(
            "/token",
            web::post().to(
                move |state: web::Data<Shared>, form: web::Form<HashMap<String, String>>| {
                    let public = public.clone();
                    async move {
                        let grant = form.get("grant_type").map(String::as_str);
                        if grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
                            return HttpResponse::BadRequest()
                                .json(json!({"error": "unsupported_grant_type"}));
                        }
                        let assertion = form.get("assertion").cloned().unwrap_or_default();
                        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
                        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                        v.validate_aud = false;
                        match jsonwebtoken::decode::<Value>(&assertion, &key, &v) {
                            Ok(data)
                                if data.claims["scope"]
                                    == "https://www.googleapis.com/auth/firebase.messaging"
                                    && data.claims["aud"]
                                        .as_str()
                                        .is_some_and(|a| a.ends_with("/token"))
                                    && data.header.kid.as_deref() == Some("key-1") =>
                            {
                                let mut s = state.lock().unwrap();
                                s.tokens_issued += 1;
                                HttpResponse::Ok().json(json!({
                                    "access_token": format!("fake-access-{}", s.tokens_issued),
                                    "expires_in": 3600, "token_type": "Bearer"
                                }))
                            }
                            other => HttpResponse::BadRequest().json(
                                json!({"error": "invalid_grant", "detail": format!("{other:?}")}),
                            ),
                        }
                    }
                },
            ),
        )
        .route(
            "/v1/projects/{project}/messages:send",
            web::post().to(
                |req: HttpRequest, state: web::Data<Shared>, body: web::Json<Value>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !auth.starts_with("Bearer fake-access-") {
                        return HttpResponse::Unauthorized()
                            .json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}));
                    }
                    let message = body.into_inner()["message"].clone();
                    let token = message["token"].as_str().unwrap_or("").to_string();
                    let answer = answer_for(&state, &token);
                    if let Some(r) = refusal(&state, &answer, &token) {
                        return r;
                    }
                    if answer == Answer::Gone {
                        return HttpResponse::NotFound().json(json!({"error": {
                        "code": 404, "status": "NOT_FOUND",
                        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                     "errorCode": "UNREGISTERED"}]}}));
                    }
                    let http2 = req.version() == actix_web::http::Version::HTTP_2;
                    state.lock().unwrap().received.push(Received {
                        device: token,
                        body: message,
                        headers: headers_of(&req),
                        http2,
                    });
                    HttpResponse::Ok().json(json!({"name": "projects/confab-test/messages/1"}))
                },
            ),
        );
    })
}

/// A fake APNs: `POST /3/device/{token}` over HTTP/2 only, the provider token (ES256)
/// checked against the key's public half, its key id and team id.
pub fn fake_apns(keys: &PushKeys, key_id: &'static str, team_id: &'static str) -> Fake {
    let public = keys.apns_public_pem.clone();
    let state: Shared = Arc::default();
    serve(keys, state, move |cfg| {
        let public = public.clone();
        cfg.route(
            "/3/device/{token}",
            web::post().to(
                move |req: HttpRequest,
                      state: web::Data<Shared>,
                      path: web::Path<String>,
                      body: web::Json<Value>| {
                    let public = public.clone();
                    async move {
                        if req.version() != actix_web::http::Version::HTTP_2 {
                            return HttpResponse::build(
                                actix_web::http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                            )
                            .finish();
                        }
                        let jwt = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bearer "))
                            .unwrap_or("")
                            .to_string();
                        let key = jsonwebtoken::DecodingKey::from_ec_pem(&public).unwrap();
                        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
                        v.required_spec_claims.clear();
                        v.validate_exp = false;
                        let ok = jsonwebtoken::decode::<Value>(&jwt, &key, &v).is_ok_and(|d| {
                            d.header.kid.as_deref() == Some(key_id) && d.claims["iss"] == team_id
                        });
                        if !ok {
                            return HttpResponse::Forbidden()
                                .json(json!({"reason": "InvalidProviderToken"}));
                        }
                        let token = path.into_inner();
                        let answer = answer_for(&state, &token);
                        if let Some(r) = refusal(&state, &answer, &token) {
                            return r;
                        }
                        if answer == Answer::Gone {
                            return HttpResponse::Gone()
                                .json(json!({"reason": "Unregistered", "timestamp": 1}));
                        }
                        state.lock().unwrap().received.push(Received {
                            device: token,
                            body: body.into_inner(),
                            headers: headers_of(&req),
                            http2: true,
                        });
                        HttpResponse::Ok()
                            .insert_header(("apns-id", "00000000-0000-0000-0000-000000000001"))
                            .finish()
                    }
                },
            ),
        );
    })
}

/// A browser's push subscription: its keys stay here to decrypt what arrives.
pub struct Subscriber {
    pub id: String,
    keypair: Box<dyn ece::LocalKeyPair>,
    auth: [u8; 16],
}

impl Subscriber {
    pub fn new(id: &str) -> Subscriber {
        let (keypair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        Subscriber {
            id: id.into(),
            keypair,
            auth,
        }
    }

    /// The `subscription` object a browser sends (endpoint on the fake service).
    pub fn subscription(&self, service: &Fake) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({
            "endpoint": format!("{}/push/{}", service.url(), self.id),
            "keys": { "p256dh": b64(&self.keypair.pub_as_raw().unwrap()), "auth": b64(&self.auth) },
        })
    }
}

/// A fake Web Push service: `POST /push/{id}`, the VAPID JWT (ES256, `k=` key, audience
/// = this origin) checked and the aes128gcm payload decrypted for the subscriber.
pub fn fake_webpush(keys: &PushKeys, subscribers: Vec<Subscriber>) -> Fake {
    let subscribers: Arc<HashMap<String, Subscriber>> =
        Arc::new(subscribers.into_iter().map(|s| (s.id.clone(), s)).collect());
    let state: Shared = Arc::default();
    let subs = subscribers.clone();
    let fake = serve(keys, state, move |cfg| {
        let subscribers = subscribers.clone();
        cfg.route(
            "/push/{id}",
            web::post().to(
                move |req: HttpRequest,
                      state: web::Data<Shared>,
                      path: web::Path<String>,
                      body: web::Bytes| {
                    let subscribers = subscribers.clone();
                    async move {
                        let id = path.into_inner();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let (mut t, mut k) = (None, None);
                        for part in auth.trim_start_matches("vapid ").split(',') {
                            let part = part.trim();
                            if let Some(v) = part.strip_prefix("t=") {
                                t = Some(v.to_string());
                            }
                            if let Some(v) = part.strip_prefix("k=") {
                                k = Some(v.to_string());
                            }
                        }
                        let raw = k.and_then(|k| {
                            base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .decode(k)
                                .ok()
                        });
                        let mut why = String::from("no t= or k=");
                        let valid = match (t, raw) {
                            (Some(t), Some(raw)) if raw.len() == 65 => {
                                let b64 = |b: &[u8]| {
                                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
                                };
                                let key = jsonwebtoken::DecodingKey::from_ec_components(
                                    &b64(&raw[1..33]),
                                    &b64(&raw[33..65]),
                                )
                                .unwrap();
                                let mut v =
                                    jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
                                v.validate_aud = false;
                                let host = req.connection_info().host().to_string();
                                match jsonwebtoken::decode::<Value>(&t, &key, &v) {
                                    Ok(d) => {
                                        why = format!("aud {} for host {host}", d.claims["aud"]);
                                        // The origin; web-push leaves the port out of it (real
                                        // services are on 443), so both forms are taken.
                                        let bare =
                                            host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
                                        d.claims["aud"].as_str().is_some_and(|a| {
                                            a == format!("https://{host}")
                                                || a == format!("https://{bare}")
                                        })
                                    }
                                    Err(e) => {
                                        why = e.to_string();
                                        false
                                    }
                                }
                            }
                            _ => false,
                        };
                        if !valid {
                            return HttpResponse::Unauthorized().body(format!("bad VAPID: {why}"));
                        }
                        if req
                            .headers()
                            .get("content-encoding")
                            .and_then(|v| v.to_str().ok())
                            != Some("aes128gcm")
                        {
                            return HttpResponse::BadRequest().body("not aes128gcm");
                        }
                        let answer = answer_for(&state, &id);
                        if let Some(r) = refusal(&state, &answer, &id) {
                            return r;
                        }
                        if answer == Answer::Gone {
                            return HttpResponse::Gone().finish();
                        }
                        let Some(sub) = subscribers.get(&id) else {
                            return HttpResponse::NotFound().finish();
                        };
                        let plain = match ece::decrypt(
                            &sub.keypair.raw_components().unwrap(),
                            &sub.auth,
                            &body,
                        ) {
                            Ok(p) => p,
                            Err(e) => {
                                return HttpResponse::BadRequest()
                                    .body(format!("cannot decrypt: {e}"))
                            }
                        };
                        let http2 = req.version() == actix_web::http::Version::HTTP_2;
                        state.lock().unwrap().received.push(Received {
                            device: id,
                            body: serde_json::from_slice(&plain).unwrap_or(Value::Null),
                            headers: headers_of(&req),
                            http2,
                        });
                        HttpResponse::Created().finish()
                    }
                },
            ),
        );
    });
    let mut s = fake.state.lock().unwrap();
    for (id, sub) in subs.iter() {
        s.subscriptions.insert(id.clone(), sub.subscription(&fake));
    }
    drop(s);
    fake
}

/// The subscription JSON a browser would send for subscriber `id` of a fake service.
pub fn subscription_of(fake: &Fake, id: &str) -> Value {
    fake.state.lock().unwrap().subscriptions[id].clone()
}

/// A fake push relay (`--push-relay-url {url}/relay`): records each notification it is
/// given, by its `token`; 410 for tokens told `Gone`.
pub fn fake_relay(keys: &PushKeys) -> Fake {
    let state: Shared = Arc::default();
    serve(keys, state, |cfg| {
        cfg.route(
            "/relay",
            web::post().to(
                |req: HttpRequest, state: web::Data<Shared>, body: web::Json<Value>| async move {
                    let body = body.into_inner();
                    let token = body["token"].as_str().unwrap_or("").to_string();
                    let answer = answer_for(&state, &token);
                    if let Some(r) = refusal(&state, &answer, &token) {
                        return r;
                    }
                    if answer == Answer::Gone {
                        return HttpResponse::Gone().finish();
                    }
                    state.lock().unwrap().received.push(Received {
                        device: token,
                        body,
                        headers: headers_of(&req),
                        http2: req.version() == actix_web::http::Version::HTTP_2,
                    });
                    HttpResponse::Ok().json(json!({"ok": true}))
                },
            ),
        );
    })
}
