//! `confab`: the command-line client of a Confab server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use argh::FromArgs;
use confab::client::saved::{Saved, SavedSessions};
use confab::client::{trust, Client, ClientError, Direction, Trust};
use serde_json::json;

mod args;
use args::*;

/// `println!` for plain output: anything from the server is shown with its control
/// characters escaped (see `confab::client::display`).
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", confab::client::display::terminal_safe(&format!($($arg)*)))
    };
}

mod account;
mod collab;
mod push;

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!(
        "confab: {}",
        confab::client::display::terminal_safe(&e.to_string())
    );
    std::process::exit(1);
}

pub fn read_secret(path: &PathBuf) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim_end_matches(['\n', '\r']).to_string(),
        Err(e) => fail(format!("cannot read {}: {e}", path.display())),
    }
}

fn main() {
    let args: Vec<String> = confab::config::normalize_help_flags(std::env::args());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    if strs.get(1) == Some(&"--version") {
        // Before parsing: argh would first ask for a subcommand.
        println!("{}", confab::config::version_line("confab"));
        return;
    }
    let cli = match Cli::from_args(
        &[strs.first().copied().unwrap_or("confab")],
        strs.get(1..).unwrap_or(&[]),
    ) {
        Ok(c) => c,
        Err(early) => {
            if early.status.is_ok() {
                println!("{}", early.output);
                std::process::exit(0);
            }
            eprintln!("{}", early.output);
            std::process::exit(2);
        }
    };
    let system = actix_rt::System::new();
    if let Err(e) = system.block_on(run(cli)) {
        fail(e);
    }
}

/// What the commands share besides the client: how to print, and where the password and
/// the kept login session are.
pub struct Ctx {
    pub json: bool,
    pub password_file: Option<PathBuf>,
    server: String,
    user: String,
    saved: SavedSessions,
}

impl Ctx {
    fn new(cli: &Cli) -> Ctx {
        let (server, user) = server_and_user(cli);
        let known = cli
            .known_servers
            .clone()
            .unwrap_or_else(trust::default_known_servers);
        Ctx {
            json: cli.json,
            password_file: cli.password_file.clone(),
            saved: SavedSessions::at(SavedSessions::default_path(&known)),
            server,
            user,
        }
    }

    /// Prints `v` with `--json`, else `plain` (control characters escaped).
    pub fn out(&self, v: serde_json::Value, plain: String) {
        if self.json {
            println!("{v}");
        } else {
            say!("{plain}");
        }
    }

    /// Drops the kept login session (it was ended).
    pub fn forget_session(&self) -> Result<(), ClientError> {
        self.saved.forget(&self.server, &self.user)
    }
}

/// A client logged in as the chosen user: with `CONFAB_TOKEN`, that token; else the login
/// session kept from an earlier run if the server still takes it; else a new login with
/// the password (kept for the next run).
async fn connect(cli: &Cli, ctx: &Ctx) -> Result<Client, ClientError> {
    let trust = if let Some(ca) = &cli.ca_file {
        Trust::CaFile(ca.clone())
    } else if cli.system_ca {
        Trust::SystemCa
    } else if let Some(fp) = &cli.fingerprint {
        Trust::Fingerprint(fp.clone())
    } else if cli.insecure {
        Trust::Insecure
    } else {
        Trust::KnownServers(
            cli.known_servers
                .clone()
                .unwrap_or_else(trust::default_known_servers),
        )
    };
    let mut client = Client::new(&ctx.server, trust)?;
    if let Ok(token) = std::env::var("CONFAB_TOKEN") {
        client.use_token(&token);
        return Ok(client);
    }
    if let Some(saved) = ctx.saved.get(&ctx.server, &ctx.user) {
        client.use_session(&saved.session_id, Some(saved.user_id));
        match client.status().await {
            Ok(v) if v["userId"] == saved.user_id => return Ok(client),
            // Ended, expired or suspended: log in again (which says why if it cannot).
            Ok(_) | Err(ClientError::Api { status: 401, .. }) => ctx.forget_session()?,
            Err(e) => return Err(e),
        }
    }
    let password = match &cli.password_file {
        Some(p) => read_secret(p),
        None => std::env::var("CONFAB_PASSWORD").map_err(|_| {
            ClientError::Usage(
                "no password: give --password-file FILE or set CONFAB_PASSWORD (or CONFAB_TOKEN)"
                    .into(),
            )
        })?,
    };
    let code = std::env::var("CONFAB_TOTP_CODE").ok();
    let user_id = match client
        .login_with_code(&ctx.user, &password, code.as_deref())
        .await
    {
        // Two-factor authentication: ask for the code (if there is a terminal to ask on).
        Err(ClientError::Api { status: 401, text })
            if text.contains("totpCode") && code.is_none() =>
        {
            let code =
                rpassword::prompt_password("One-time code: ").map_err(|_| ClientError::Api {
                    status: 401,
                    text: format!("{text} (or set CONFAB_TOTP_CODE)"),
                })?;
            client
                .login_with_code(&ctx.user, &password, Some(code.trim()))
                .await?
        }
        other => other?,
    };
    if let Some(sid) = client.session_id() {
        let saved = Saved {
            session_id: sid.to_string(),
            user_id,
        };
        // Keeping the session is a convenience: a command does not fail for it.
        if let Err(e) = ctx.saved.put(&ctx.server, &ctx.user, saved) {
            eprintln!("confab: {e}");
        }
    }
    Ok(client)
}

fn print_messages(cli: &Cli, messages: &[confab::model::TextMessage]) {
    if cli.json {
        println!("{}", json!(messages));
        return;
    }
    for m in messages {
        let comments = if m.comment_count > 0 {
            format!(" [{} comments]", m.comment_count)
        } else {
            String::new()
        };
        say!(
            "{}\t{}\tuser {}\t{}{}",
            m.message_id,
            m.created_utc,
            m.user_id,
            m.text,
            comments
        );
    }
}

fn server_and_user(cli: &Cli) -> (String, String) {
    let server = cli
        .server
        .clone()
        .or_else(|| std::env::var("CONFAB_SERVER").ok())
        .unwrap_or_else(|| "localhost:7777".into());
    let user = cli
        .user
        .clone()
        .or_else(|| std::env::var("CONFAB_USER").ok())
        .unwrap_or_else(|| "admin".into());
    (server, user)
}

fn local_store(
    cli: &Cli,
    dir: &Option<PathBuf>,
) -> Result<confab::client::local::LocalStore, ClientError> {
    let (server, user) = server_and_user(cli);
    let dir = dir
        .clone()
        .unwrap_or_else(|| confab::client::local::LocalStore::default_dir(&server, &user));
    confab::client::local::LocalStore::open(&dir)
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    if let Command::History(cmd) = &cli.command {
        if cmd.local {
            // Offline: no server involved.
            let store = local_store(&cli, &cmd.store)?;
            let room = store.resolve_room(&cmd.room)?;
            let mut messages: Vec<_> = store
                .messages(room)?
                .into_iter()
                .filter(|m| m.parent_message_id == 0 && cmd.before.is_none_or(|b| m.message_id < b))
                .collect();
            if let Some(l) = cmd.limit {
                let skip = messages.len().saturating_sub(l);
                messages.drain(..skip);
            }
            print_messages(&cli, &messages);
            return Ok(());
        }
    }
    let ctx = Ctx::new(&cli);
    let mut c = connect(&cli, &ctx).await?;
    let out = |v: serde_json::Value, plain: String| ctx.out(v, plain);
    match &cli.command {
        Command::Passwd(cmd) => account::passwd(&mut c, &ctx, cmd).await?,
        Command::Totp(cmd) => account::totp(&mut c, &ctx, cmd).await?,
        Command::Push(cmd) => push::push(&mut c, &ctx, cmd).await?,
        Command::Search(cmd) => collab::search(&mut c, &ctx, cmd).await?,
        Command::Issues(cmd) => collab::issues(&mut c, &ctx, cmd).await?,
        Command::Meetings(cmd) => collab::meetings(&mut c, &ctx, cmd).await?,
        Command::SetStatus(cmd) => collab::set_status(&mut c, &ctx, cmd).await?,
        Command::DisplayName(cmd) => account::display_name(&mut c, &ctx, cmd).await?,
        Command::Sessions(cmd) => account::sessions(&mut c, &ctx, cmd).await?,
        Command::Logout(cmd) => account::logout(&mut c, &ctx, cmd).await?,
        Command::RenameUser(cmd) => account::rename_user(&mut c, &ctx, cmd).await?,
        Command::RemoveUser(cmd) => account::remove_user(&mut c, &ctx, cmd).await?,
        Command::GrantAdmin(cmd) => account::set_admin(&mut c, &ctx, &cmd.user, true).await?,
        Command::RevokeAdmin(cmd) => account::set_admin(&mut c, &ctx, &cmd.user, false).await?,
        Command::Users(_) => {
            let users = c.users().await?;
            if cli.json {
                println!("{}", json!(users));
            } else {
                for u in users {
                    say!(
                        "{}\t{}\t{}\t{:?}{}",
                        u.user_id,
                        u.user_name,
                        u.display_name,
                        u.status,
                        if u.is_admin { "\tadmin" } else { "" }
                    );
                }
            }
        }
        Command::CreateUser(cmd) => {
            let password = cmd.password_file.as_ref().map(read_secret);
            let (id, generated) = c
                .create_user(&cmd.name, password.as_deref(), cmd.admin)
                .await?;
            match generated {
                Some(p) => out(
                    json!({ "userId": id, "password": p }),
                    format!("{id}\npassword: {p}"),
                ),
                None => out(json!({ "userId": id }), id.to_string()),
            }
        }
        Command::Rooms(cmd) if cmd.all => {
            let rooms = c.all_rooms().await?;
            if cli.json {
                println!("{}", json!(rooms));
            } else {
                for r in rooms {
                    say!(
                        "{}\t{}\t{}\t{} members{}",
                        r["roomId"],
                        r["displayName"].as_str().unwrap_or(""),
                        r["roomType"].as_str().unwrap_or(""),
                        r["memberCount"],
                        if r["isArchived"] == true {
                            "\tarchived"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Command::Rooms(_) => {
            let rooms = c.rooms().await?;
            if cli.json {
                println!("{}", json!(rooms));
            } else {
                for r in rooms {
                    say!(
                        "{}\t{}\t{:?}\tunread {}",
                        r.room_id,
                        r.display_name,
                        r.room_type,
                        r.unread_message_count
                    );
                }
            }
        }
        Command::CreateRoom(cmd) => {
            let mut members = Vec::new();
            for m in &cmd.member {
                members.push(c.resolve_user(m).await?);
            }
            let id = c.create_room(&cmd.name, &members).await?;
            out(json!({ "roomId": id }), id.to_string());
        }
        Command::AddMember(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let user = c.resolve_user(&cmd.user).await?;
            c.add_member(room, user).await?;
            out(
                json!({ "roomId": room, "userId": user }),
                format!("added user {user} to room {room}"),
            );
        }
        Command::Members(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let members = c.members(room).await?;
            if cli.json {
                println!("{}", json!(members));
            } else {
                for m in members {
                    say!(
                        "{}{}",
                        m["userId"],
                        if m["isModerator"] == json!(true) {
                            "\tmoderator"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Command::Send(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let message = confab::model::NewMessage {
                content: cmd.text.clone(),
                ..Default::default()
            };
            // One Idempotency-Key for every attempt: a retry never makes a second message.
            let m = match &cmd.idempotency_key {
                Some(key) => c.send_idempotent(room, &message, key).await?,
                None => c.send_reliably(room, &message, 3).await?,
            };
            out(
                json!({ "messageId": m.message_id, "message": m }),
                m.message_id.to_string(),
            );
        }
        Command::History(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let messages = c
                .history(room, cmd.before, cmd.limit, Some(Direction::Backward))
                .await?;
            print_messages(&cli, &messages);
        }
        Command::Comment(cmd) => {
            let m = c.comment(cmd.message_id, &cmd.text).await?;
            out(
                json!({ "messageId": m.message_id, "message": m }),
                m.message_id.to_string(),
            );
        }
        Command::Comments(cmd) => {
            let messages = c.comments(cmd.message_id, None, None, None).await?;
            print_messages(&cli, &messages);
        }
        Command::Delete(cmd) => {
            c.delete_message(cmd.message_id).await?;
            out(
                json!({ "deleted": cmd.message_id }),
                format!("deleted {}", cmd.message_id),
            );
        }
        Command::Read(cmd) => {
            c.mark_read(cmd.message_id).await?;
            out(
                json!({ "read": cmd.message_id }),
                format!("marked {} as read", cmd.message_id),
            );
        }
        Command::Follow(cmd) => {
            let mut events = c.events().await?;
            // Tell whoever waits for us (scripts, tests) that the stream is open.
            eprintln!("confab: following events");
            let deadline = cmd.timeout.map(|s| Instant::now() + Duration::from_secs(s));
            let mut seen = 0usize;
            while cmd.count.is_none_or(|n| seen < n) {
                let wait = match deadline {
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(w) => w,
                        None => break,
                    },
                    None => Duration::from_secs(3600 * 24 * 365),
                };
                match events.next_within(wait).await? {
                    Some(ev) if cli.json => {
                        println!("{}", json!(ev));
                        seen += 1;
                    }
                    Some(ev) => {
                        say!("{}", json!(ev));
                        seen += 1;
                    }
                    None => break,
                }
            }
            events.close().await;
        }
        Command::Token(_) => {
            let t = c.create_token().await?;
            out(json!({ "token": t }), t);
        }
        Command::Status(_) => {
            let v = c.status().await?;
            out(v.clone(), format!("logged in as user {}", v["userId"]));
        }
        Command::RemoveMember(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let user = c.resolve_user(&cmd.user).await?;
            c.remove_member(room, user).await?;
            out(
                json!({ "roomId": room, "userId": user }),
                format!("removed user {user} from room {room}"),
            );
        }
        Command::Leave(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            c.leave(room).await?;
            out(json!({ "roomId": room }), format!("left room {room}"));
        }
        Command::Edit(cmd) => {
            let m = c.edit(cmd.message_id, &cmd.text).await?;
            out(
                json!({ "messageId": m.message_id, "message": m }),
                m.message_id.to_string(),
            );
        }
        Command::React(cmd) => {
            let m = c.react(cmd.message_id, &cmd.emoji, !cmd.remove).await?;
            let summary: Vec<String> = m
                .reactions
                .iter()
                .map(|r| format!("{} {}", r.emoji, r.user_ids.len()))
                .collect();
            out(
                json!({ "messageId": m.message_id, "reactions": m.reactions }),
                summary.join("  "),
            );
        }
        Command::Pin(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let r = c.pin(room, !cmd.unpin).await?;
            out(
                json!({ "roomId": room, "isPinned": r.is_pinned }),
                format!("room {room} pinned: {}", r.is_pinned),
            );
        }
        Command::Sync(cmd) => {
            let store = local_store(&cli, &cmd.store)?;
            let s = confab::client::local::sync(&mut c, &store).await?;
            out(
                json!(s),
                format!(
                    "rooms: +{} -{} ~{}; messages stored {}, deleted {}; {} messages held locally",
                    s.rooms_added,
                    s.rooms_removed,
                    s.rooms_changed,
                    s.messages_stored,
                    s.messages_deleted,
                    store.message_count()
                ),
            );
        }
        Command::Upload(cmd) => {
            if cmd.files.is_empty() {
                return Err(ClientError::Usage("give at least one file".into()));
            }
            let attachments = c.upload(cmd.message_id, &cmd.files, true).await?;
            if cli.json {
                println!("{}", json!(attachments));
            } else {
                for a in attachments {
                    say!(
                        "{}\t{}\t{} bytes\tsha1 {}",
                        a.attachment_id,
                        a.file_name,
                        a.file_size,
                        a.file_checksum
                    );
                }
            }
        }
        Command::Backup(cmd) => backup(&mut c, &cmd.out, &out).await?,
        Command::Download(cmd) => {
            let meta = c.attachment(cmd.attachment_id).await?;
            let out_path = cmd
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(&meta.file_name));
            let mut file = std::fs::File::create(&out_path).map_err(|e| {
                ClientError::Usage(format!("cannot create {}: {e}", out_path.display()))
            })?;
            let (_, n, sha1) = c
                .download(cmd.attachment_id, &meta.file_name, None, &mut file)
                .await?;
            if sha1 != meta.file_checksum {
                return Err(ClientError::Decode(format!(
                    "checksum mismatch: got {sha1}, the server says {}",
                    meta.file_checksum
                )));
            }
            out(
                json!({ "attachmentId": cmd.attachment_id, "path": out_path, "bytes": n, "sha1": sha1 }),
                format!("{} ({n} bytes, sha1 verified)", out_path.display()),
            );
        }
        Command::Permissions(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let p = c.permissions(room).await?;
            let v = json!(p);
            if cli.json {
                println!("{v}");
            } else if let Some(map) = v.as_object() {
                for (k, val) in map {
                    say!("{k}\t{val}");
                }
            }
        }
        Command::SetPermission(cmd) => {
            let value = match cmd.value.as_str() {
                "on" => json!(true),
                "off" => json!(false),
                "inherit" if !cmd.global => serde_json::Value::Null,
                other => {
                    return Err(ClientError::Usage(format!(
                        "the value is on, off{} — not '{other}'",
                        if cmd.global { "" } else { " or inherit" }
                    )))
                }
            };
            let v = if cmd.global {
                c.set_global_permissions(json!({ cmd.flag.clone(): value }))
                    .await?
            } else {
                let room = cmd
                    .room
                    .as_deref()
                    .ok_or_else(|| ClientError::Usage("give --room ROOM, or --global".into()))?;
                let room = c.resolve_room(room).await?;
                let user = match &cmd.user {
                    Some(u) => Some(c.resolve_user(u).await?),
                    None => None,
                };
                c.set_room_permissions(room, user, json!({ cmd.flag.clone(): value }))
                    .await?
            };
            println!("{v}");
        }
        Command::Moderator(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let user = c.resolve_user(&cmd.user).await?;
            c.set_moderator(room, user, !cmd.off).await?;
            if !cli.json {
                say!(
                    "user {user} is {} of room {room}",
                    if cmd.off {
                        "no longer a moderator"
                    } else {
                        "a moderator"
                    }
                );
            }
        }
        Command::RoomOptions(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let on_off = |name: &str, v: &Option<String>| -> Result<Option<bool>, ClientError> {
                match v.as_deref() {
                    None => Ok(None),
                    Some("on") => Ok(Some(true)),
                    Some("off") => Ok(Some(false)),
                    Some(o) => Err(ClientError::Usage(format!(
                        "--{name} is on or off, not '{o}'"
                    ))),
                }
            };
            let mut change = serde_json::Map::new();
            match cmd.join_link.as_deref() {
                None => {}
                Some("renew") => {
                    change.insert("renewJoinLink".into(), json!(true));
                }
                other => {
                    change.insert(
                        "joinByLink".into(),
                        json!(on_off("join-link", &other.map(str::to_string))?),
                    );
                }
            }
            for (key, name, v) in [
                ("autoAddNewUsers", "auto-add", &cmd.auto_add),
                (
                    "membersMayLeave",
                    "members-may-leave",
                    &cmd.members_may_leave,
                ),
                ("isArchived", "archived", &cmd.archived),
            ] {
                if let Some(b) = on_off(name, v)? {
                    change.insert(key.into(), json!(b));
                }
            }
            if let Some(n) = &cmd.name {
                change.insert("displayName".into(), json!(n));
            }
            let r = c
                .update_room(room, serde_json::Value::Object(change))
                .await?;
            if cli.json {
                println!("{}", json!(r));
            } else {
                say!(
                    "room {}: {}; members may leave: {}; new users added: {}; join code: {}",
                    r.room_id,
                    r.display_name,
                    r.members_may_leave,
                    r.auto_add_new_users,
                    r.join_code.as_deref().unwrap_or("(off)")
                );
            }
        }
        Command::Voice(cmd) => {
            let room = c.resolve_room(&cmd.room).await?;
            let cipher = confab::voice::CipherKind::from_name(&cmd.cipher).ok_or_else(|| {
                ClientError::Usage(format!(
                    "--cipher is aes-256-gcm or chacha20-poly1305, not '{}'",
                    cmd.cipher
                ))
            })?;
            if !(cmd.duration.is_finite() && cmd.duration >= 0.0 && cmd.drain >= 0.0) {
                return Err(ClientError::Usage(
                    "--duration and --drain are seconds".into(),
                ));
            }
            let opts = confab::client::voice::VoiceOptions {
                duration: std::time::Duration::from_secs_f64(cmd.duration),
                packets_per_second: cmd.pps.clamp(1, 10_000),
                payload: cmd.payload,
                tcp: cmd.tcp,
                cipher,
                listen_only: cmd.listen_only,
                drain: std::time::Duration::from_secs_f64(cmd.drain),
                udp_port_override: cmd.udp_port,
            };
            let report = confab::client::voice::run(&mut c, room, &opts).await?;
            say!("{report}");
        }
        Command::Join(cmd) => {
            let r = c.join(&cmd.code).await?;
            if cli.json {
                println!("{}", json!(r));
            } else {
                say!("joined room {} ({})", r.room_id, r.display_name);
            }
        }
        Command::Unread(_) => {
            let rooms: Vec<_> = c
                .rooms()
                .await?
                .into_iter()
                .filter(|r| r.unread_message_count > 0)
                .collect();
            if cli.json {
                println!("{}", json!(rooms.iter().map(|r| json!({ "roomId": r.room_id, "displayName": r.display_name, "unreadMessageCount": r.unread_message_count })).collect::<Vec<_>>()));
            } else {
                for r in rooms {
                    say!(
                        "{}\t{}\t{}",
                        r.room_id,
                        r.display_name,
                        r.unread_message_count
                    );
                }
            }
        }
        Command::Suspend(cmd) => {
            let user = c.resolve_user(&cmd.user).await?;
            c.suspend(user).await?;
            out(
                json!({ "userId": user, "status": "Suspended" }),
                format!("suspended user {user}"),
            );
        }
        Command::Reactivate(cmd) => {
            let user = c.resolve_user(&cmd.user).await?;
            c.reactivate(user).await?;
            out(
                json!({ "userId": user, "status": "Active" }),
                format!("reactivated user {user}"),
            );
        }
        Command::ResetPassword(cmd) => {
            let user = c.resolve_user(&cmd.user).await?;
            let given = cmd.password_file.as_ref().map(read_secret);
            match c.reset_password(user, given.as_deref()).await? {
                Some(p) => out(
                    json!({ "userId": user, "password": p }),
                    format!("password: {p}"),
                ),
                None => out(
                    json!({ "userId": user }),
                    format!("password of user {user} set"),
                ),
            }
        }
        Command::Health(_) => {
            let v = c.server_health().await?;
            say!(
                "{}",
                if cli.json {
                    v.to_string()
                } else {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                }
            );
        }
    }
    Ok(())
}

/// `confab backup --out FILE`: the archive streamed to a partial file beside FILE, read
/// back whole (manifest, every member, the record count), synced, then renamed to FILE.
async fn backup(
    c: &mut Client,
    path: &std::path::Path,
    out: impl Fn(serde_json::Value, String),
) -> Result<(), ClientError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let partial = path.with_file_name(format!(".{name}.partial"));
    let received = async {
        let mut file = std::fs::File::create(&partial)
            .map_err(|e| ClientError::Usage(format!("cannot create {}: {e}", partial.display())))?;
        let (_, bytes, _) = c.get_to("/api/v1/backup", &mut file).await?;
        file.sync_all()
            .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", partial.display())))?;
        let file = std::fs::File::open(&partial)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", partial.display())))?;
        let checked = confab::storage::backup::verify(std::io::BufReader::new(file))
            .map_err(|e| ClientError::Decode(format!("the archive received is not whole: {e}")))?;
        std::fs::rename(&partial, path)
            .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", path.display())))?;
        Ok::<_, ClientError>((bytes, checked))
    }
    .await;
    let (bytes, checked) = match received {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let m = &checked.manifest;
    out(
        serde_json::json!({
            "path": path, "bytes": bytes, "records": m.records, "contentFiles": m.content_files,
            "contentBytes": m.content_bytes, "schemaVersion": m.schema_version,
            "confabVersion": m.confab_version, "encrypted": m.encrypted,
        }),
        format!(
            "{} ({bytes} bytes): {} records, {} attachment files, schema {}, checked",
            path.display(),
            m.records,
            m.content_files,
            m.schema_version
        ),
    );
    Ok(())
}
