//! The CLI's account commands: `passwd`, `display-name`, `sessions`, `logout`, and the
//! administrators' `rename-user`, `remove-user`, `grant-admin`, `revoke-admin`.

use std::path::PathBuf;

use argh::FromArgs;
use confab::client::{Client, ClientError};
use serde_json::json;

use crate::{read_secret, Ctx};

/// change your own password (asks for the current and the new one unless given in files);
/// your other login sessions end
#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
pub struct PasswdCmd {
    /// file holding the new password (otherwise CONFAB_NEW_PASSWORD, or asked)
    #[argh(option)]
    new_password_file: Option<PathBuf>,
}

/// set your display name (or, for administrators, another user's with --user-id)
#[derive(FromArgs)]
#[argh(subcommand, name = "display-name")]
pub struct DisplayNameCmd {
    /// the new display name
    #[argh(positional)]
    name: String,
    /// whose (user id or name; administrators)
    #[argh(option)]
    of: Option<String>,
}

/// list your login sessions, or end one with --end KEY
#[derive(FromArgs)]
#[argh(subcommand, name = "sessions")]
pub struct SessionsCmd {
    /// end the session with this key
    #[argh(option)]
    end: Option<String>,
}

/// end this login session (with --all: every session of yours, on every device)
#[derive(FromArgs)]
#[argh(subcommand, name = "logout")]
pub struct LogoutCmd {
    /// end every login session of yours
    #[argh(switch)]
    all: bool,
}

/// two-factor authentication: `enable` (shows the otpauth URI for an authenticator app,
/// then asks for a code and prints the recovery codes) or `disable` (asks for a code);
/// codes come from CONFAB_TOTP_CODE when set
#[derive(FromArgs)]
#[argh(subcommand, name = "totp")]
pub struct TotpCmd {
    /// enable or disable
    #[argh(positional)]
    action: String,
    /// whose (administrators turning it off for a user who lost their phone)
    #[argh(option)]
    of: Option<String>,
}

fn ask_code() -> Result<String, ClientError> {
    if let Ok(c) = std::env::var("CONFAB_TOTP_CODE") {
        return Ok(c);
    }
    rpassword::prompt_password("Code from the authenticator app (or a recovery code): ")
        .map(|c| c.trim().to_string())
        .map_err(|e| {
            ClientError::Usage(format!(
                "cannot ask for the code ({e}): set CONFAB_TOTP_CODE"
            ))
        })
}

pub async fn totp(c: &mut Client, ctx: &Ctx, cmd: &TotpCmd) -> Result<(), ClientError> {
    let me = c
        .user_id
        .ok_or_else(|| ClientError::Usage("totp needs a login, not a Web API token".into()))?;
    match cmd.action.as_str() {
        "enable" => {
            let v = c.totp_begin(me).await?;
            // Shown before asking: the code comes from the app that scans this.
            eprintln!(
                "Add this to your authenticator app (as a QR code, or the secret by hand):\n  {}\n  secret: {}",
                v["otpauthUri"].as_str().unwrap_or(""),
                v["secret"].as_str().unwrap_or("")
            );
            let codes = c.totp_confirm(me, &ask_code()?).await?;
            ctx.out(
                json!({ "enabled": true, "otpauthUri": v["otpauthUri"], "recoveryCodes": codes }),
                format!(
                    "two-factor authentication is on. Recovery codes (each works once; keep them safe):\n{}",
                    codes.join("\n")
                ),
            );
        }
        "disable" => {
            let (id, code) = match &cmd.of {
                Some(u) => (c.resolve_user(u).await?, None),
                None => (me, Some(ask_code()?)),
            };
            c.totp_disable(id, code.as_deref()).await?;
            ctx.out(
                json!({ "userId": id, "enabled": false }),
                format!("two-factor authentication is off for user {id}"),
            );
        }
        other => {
            return Err(ClientError::Usage(format!(
                "confab totp {other}: use enable or disable"
            )))
        }
    }
    Ok(())
}

/// give a user a new user name (administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "rename-user")]
pub struct RenameUserCmd {
    /// user id or name
    #[argh(positional)]
    user: String,
    /// the new user name
    #[argh(positional)]
    new_name: String,
}

/// remove a user for good (administrators): they cannot log in and leave every group
/// room; their messages and files stay, still attributed to them
#[derive(FromArgs)]
#[argh(subcommand, name = "remove-user")]
pub struct RemoveUserCmd {
    /// user id or name
    #[argh(positional)]
    user: String,
}

/// make a user an administrator (administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "grant-admin")]
pub struct GrantAdminCmd {
    /// user id or name
    #[argh(positional)]
    pub user: String,
}

/// take administrator rights from a user (administrators; never the last one)
#[derive(FromArgs)]
#[argh(subcommand, name = "revoke-admin")]
pub struct RevokeAdminCmd {
    /// user id or name
    #[argh(positional)]
    pub user: String,
}

/// A secret from a file, an environment variable, or the terminal.
fn secret(file: Option<&PathBuf>, env: &str, prompt: &str) -> Result<String, ClientError> {
    if let Some(f) = file {
        return Ok(read_secret(f));
    }
    if let Ok(v) = std::env::var(env) {
        return Ok(v);
    }
    rpassword::prompt_password(prompt).map_err(|e| {
        ClientError::Usage(format!(
            "cannot ask for a password ({e}): give it in a file or in {env}"
        ))
    })
}

pub async fn passwd(c: &mut Client, ctx: &Ctx, cmd: &PasswdCmd) -> Result<(), ClientError> {
    let me = c
        .user_id
        .ok_or_else(|| ClientError::Usage("passwd needs a login, not a Web API token".into()))?;
    let old = secret(
        ctx.password_file.as_ref(),
        "CONFAB_PASSWORD",
        "Current password: ",
    )?;
    let new = match (&cmd.new_password_file, std::env::var("CONFAB_NEW_PASSWORD")) {
        (Some(f), _) => read_secret(f),
        (None, Ok(v)) => v,
        (None, Err(_)) => {
            let a = secret(None, "CONFAB_NEW_PASSWORD", "New password: ")?;
            let b = secret(None, "CONFAB_NEW_PASSWORD", "New password again: ")?;
            if a != b {
                return Err(ClientError::Usage("the two new passwords differ".into()));
            }
            a
        }
    };
    let ended = c.change_own_password(me, &old, &new).await?;
    ctx.out(
        json!({ "userId": me, "endedSessions": ended }),
        format!("password changed; {ended} other session(s) ended"),
    );
    Ok(())
}

pub async fn display_name(
    c: &mut Client,
    ctx: &Ctx,
    cmd: &DisplayNameCmd,
) -> Result<(), ClientError> {
    let id = match &cmd.of {
        Some(u) => c.resolve_user(u).await?,
        None => c
            .user_id
            .ok_or_else(|| ClientError::Usage("give --of USER with a Web API token".into()))?,
    };
    let user = c
        .update_user(id, json!({ "displayName": cmd.name }))
        .await?;
    ctx.out(
        json!(user),
        format!(
            "user {} is now shown as {}",
            user.user_id, user.display_name
        ),
    );
    Ok(())
}

pub async fn sessions(c: &mut Client, ctx: &Ctx, cmd: &SessionsCmd) -> Result<(), ClientError> {
    if let Some(key) = &cmd.end {
        c.end_session(key).await?;
        ctx.out(json!({ "ended": key }), format!("session {key} ended"));
        return Ok(());
    }
    let list = c.sessions().await?;
    if ctx.json {
        println!("{}", json!(list));
        return Ok(());
    }
    for s in list {
        say!(
            "{}\t{}\tlast used {}\t{}\t{}{}",
            s["sessionKey"].as_str().unwrap_or(""),
            s["address"].as_str().unwrap_or(""),
            s["lastSeenUtc"],
            s["client"].as_str().unwrap_or(""),
            s["createdUtc"],
            if s["current"] == true {
                "\t(this one)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub async fn logout(c: &mut Client, ctx: &Ctx, cmd: &LogoutCmd) -> Result<(), ClientError> {
    let ended = if cmd.all {
        c.end_all_sessions(false).await?
    } else {
        c.logout().await?;
        1
    };
    ctx.forget_session()?;
    ctx.out(
        json!({ "endedSessions": ended }),
        format!("logged out ({ended} session(s) ended)"),
    );
    Ok(())
}

pub async fn rename_user(
    c: &mut Client,
    ctx: &Ctx,
    cmd: &RenameUserCmd,
) -> Result<(), ClientError> {
    let id = c.resolve_user(&cmd.user).await?;
    let user = c
        .update_user(id, json!({ "userName": cmd.new_name }))
        .await?;
    ctx.out(
        json!(user),
        format!("user {} is now {}", user.user_id, user.user_name),
    );
    Ok(())
}

pub async fn remove_user(
    c: &mut Client,
    ctx: &Ctx,
    cmd: &RemoveUserCmd,
) -> Result<(), ClientError> {
    let id = c.resolve_user(&cmd.user).await?;
    let v = c.remove_user(id).await?;
    ctx.out(
        v.clone(),
        format!(
            "removed user {id}: left {} room(s), {} session(s) ended",
            v["roomsLeft"], v["endedSessions"]
        ),
    );
    Ok(())
}

pub async fn set_admin(
    c: &mut Client,
    ctx: &Ctx,
    user: &str,
    is_admin: bool,
) -> Result<(), ClientError> {
    let id = c.resolve_user(user).await?;
    c.set_admin(id, is_admin).await?;
    ctx.out(
        json!({ "userId": id, "isAdmin": is_admin }),
        if is_admin {
            format!("user {id} is an administrator")
        } else {
            format!("user {id} is no longer an administrator")
        },
    );
    Ok(())
}
