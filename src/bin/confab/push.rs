//! `confab push …`: register this machine's (or a phone's) push target, list and remove
//! devices, send a test notification.

use argh::FromArgs;
use confab::client::{Client, ClientError};
use serde_json::json;

use super::Ctx;

/// push notifications: register, unregister, list, test
#[derive(FromArgs)]
#[argh(subcommand, name = "push")]
pub struct PushCmd {
    #[argh(subcommand)]
    action: PushAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum PushAction {
    Register(RegisterCmd),
    Unregister(UnregisterCmd),
    List(ListCmd),
    Test(TestCmd),
}

/// register a push target: --platform fcm|apns --token T [--app-id A] [--sandbox], or
/// --platform webpush --subscription FILE (a browser's PushSubscription JSON)
#[derive(FromArgs)]
#[argh(subcommand, name = "register")]
struct RegisterCmd {
    /// fcm, apns or webpush
    #[argh(option)]
    platform: String,
    /// the device token (fcm, apns)
    #[argh(option)]
    token: Option<String>,
    /// the app id (apns: the bundle id, the apns-topic)
    #[argh(option)]
    app_id: Option<String>,
    /// an APNs development build (the sandbox host)
    #[argh(switch)]
    sandbox: bool,
    /// a file holding the browser's subscription JSON (webpush)
    #[argh(option)]
    subscription: Option<std::path::PathBuf>,
}

/// remove one of your push devices
#[derive(FromArgs)]
#[argh(subcommand, name = "unregister")]
struct UnregisterCmd {
    /// the device id (from `confab push list`)
    #[argh(positional)]
    device_id: u64,
}

/// list your push devices
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct ListCmd {}

/// send a test notification to each of your push devices
#[derive(FromArgs)]
#[argh(subcommand, name = "test")]
struct TestCmd {}

pub async fn push(c: &mut Client, ctx: &Ctx, cmd: &PushCmd) -> Result<(), ClientError> {
    match &cmd.action {
        PushAction::Register(r) => {
            let mut body = json!({ "platform": r.platform, "sandbox": r.sandbox });
            if let Some(t) = &r.token {
                body["token"] = json!(t);
            }
            if let Some(a) = &r.app_id {
                body["appId"] = json!(a);
            }
            if let Some(path) = &r.subscription {
                let text = std::fs::read(path).map_err(|e| {
                    ClientError::Usage(format!("cannot read {}: {e}", path.display()))
                })?;
                let sub: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                    ClientError::Usage(format!("{} is not JSON: {e}", path.display()))
                })?;
                body["subscription"] = sub;
            }
            let id = c.push_register(body).await?;
            ctx.out(json!({ "deviceId": id }), id.to_string());
        }
        PushAction::Unregister(u) => {
            c.push_unregister(u.device_id).await?;
            ctx.out(
                json!({ "deviceId": u.device_id, "removed": true }),
                format!("device {} removed", u.device_id),
            );
        }
        PushAction::List(_) => {
            let devices = c.push_devices().await?;
            if ctx.json {
                println!("{}", json!({ "devices": devices }));
            } else {
                for d in devices {
                    println!(
                        "{}\t{}\t{}",
                        d["deviceId"],
                        d["platform"].as_str().unwrap_or(""),
                        d["appId"]
                            .as_str()
                            .or(d["endpointHost"].as_str())
                            .unwrap_or("")
                    );
                }
            }
        }
        PushAction::Test(_) => {
            let n = c.push_test().await?;
            ctx.out(
                json!({ "devices": n }),
                format!("a test notification is on its way to {n} device(s)"),
            );
        }
    }
    Ok(())
}
