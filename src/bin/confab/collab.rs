//! `confab search`, `confab issues`, `confab meetings`, `confab set-status`: finding things
//! across rooms.

use argh::FromArgs;
use confab::client::{Client, ClientError, SearchParams};
use serde_json::{json, Value};

use super::Ctx;

/// search the messages, comments, issues, meetings and file names of your rooms
#[derive(FromArgs)]
#[argh(subcommand, name = "search")]
pub struct SearchCmd {
    /// words to find: "a phrase", prefix*, -excluded
    #[argh(positional)]
    query: Vec<String>,
    /// only this room (id or name)
    #[argh(option)]
    room: Option<String>,
    /// only messages by this user (id or name)
    #[argh(option)]
    from: Option<String>,
    /// only this message type: Regular, Issue or Meeting
    #[argh(option, long = "type")]
    message_type: Option<String>,
    /// only messages with files
    #[argh(switch)]
    files: bool,
    /// newest first instead of best match first
    #[argh(switch)]
    newest: bool,
    /// at most this many results (default 20, at most 100)
    #[argh(option)]
    limit: Option<usize>,
}

/// list the issues of your rooms, with counts per status
#[derive(FromArgs)]
#[argh(subcommand, name = "issues")]
pub struct IssuesCmd {
    /// only issues assigned to you
    #[argh(switch)]
    mine: bool,
    /// only issues assigned to this user (id or name)
    #[argh(option)]
    assignee: Option<String>,
    /// only these statuses (comma-separated: Backlog,ToDo,InProgress,ToVerify,Done,Declined)
    #[argh(option)]
    status: Option<String>,
    /// only this room (id or name)
    #[argh(option)]
    room: Option<String>,
    /// only this issue type (Task, Bug, …)
    #[argh(option, long = "type")]
    issue_type: Option<String>,
    /// newest (default), oldest, updated or priority
    #[argh(option)]
    sort: Option<String>,
}

/// list your upcoming meetings, or write them (or one) as iCalendar
#[derive(FromArgs)]
#[argh(subcommand, name = "meetings")]
pub struct MeetingsCmd {
    /// print iCalendar instead of a list
    #[argh(switch)]
    ics: bool,
    /// only this meeting (its message id; with --ics)
    #[argh(option)]
    id: Option<u64>,
}

/// set the status line others see with your presence ("" clears it)
#[derive(FromArgs)]
#[argh(subcommand, name = "set-status")]
pub struct SetStatusCmd {
    /// the text
    #[argh(positional)]
    text: String,
}

/// The text of a snippet with its highlights marked `[like this]` (ranges in UTF-16).
fn marked(snippet: &str, highlights: &[Value]) -> String {
    let units: Vec<u16> = snippet.encode_utf16().collect();
    let mut out = Vec::with_capacity(units.len() + 8);
    let mut at = 0usize;
    for h in highlights {
        let (Some(s), Some(e)) = (h[0].as_u64(), h[1].as_u64()) else {
            continue;
        };
        let (s, e) = (s as usize, e as usize);
        if s < at || e > units.len() || s > e {
            continue;
        }
        out.extend_from_slice(&units[at..s]);
        out.push(u16::from(b'['));
        out.extend_from_slice(&units[s..e]);
        out.push(u16::from(b']'));
        at = e;
    }
    out.extend_from_slice(&units[at..]);
    String::from_utf16_lossy(&out).replace('\n', " ")
}

pub async fn search(c: &mut Client, ctx: &Ctx, cmd: &SearchCmd) -> Result<(), ClientError> {
    let mut p = SearchParams {
        q: cmd.query.join(" "),
        message_type: cmd.message_type.clone(),
        has_attachment: cmd.files.then_some(true),
        newest_first: cmd.newest,
        limit: cmd.limit,
        ..SearchParams::default()
    };
    if let Some(room) = &cmd.room {
        p.room_id = Some(c.resolve_room(room).await?);
    }
    if let Some(user) = &cmd.from {
        p.author_id = Some(c.resolve_user(user).await?);
    }
    let answer = c.search(&p).await?;
    let empty = Vec::new();
    let results = answer["results"].as_array().unwrap_or(&empty);
    let mut lines = Vec::new();
    for r in results {
        lines.push(format!(
            "{}\troom {}\tuser {}\t{}",
            r["messageId"],
            r["roomId"],
            r["authorId"],
            marked(
                r["snippet"].as_str().unwrap_or(""),
                r["highlights"].as_array().unwrap_or(&empty)
            )
        ));
    }
    if answer["complete"] == json!(false) {
        lines.push("(the search index is being rebuilt: older messages may be missing)".into());
    }
    if results.is_empty() {
        lines.push("nothing found".into());
    }
    ctx.out(answer.clone(), lines.join("\n"));
    Ok(())
}

/// A message object's first line of text (an issue's or a meeting's title).
fn first_line(m: &Value) -> &str {
    m["text"]
        .as_str()
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
}

pub async fn issues(c: &mut Client, ctx: &Ctx, cmd: &IssuesCmd) -> Result<(), ClientError> {
    let mut filters: Vec<(&str, String)> = Vec::new();
    if cmd.mine {
        filters.push(("assignee", "me".into()));
    } else if let Some(user) = &cmd.assignee {
        filters.push(("assignee", c.resolve_user(user).await?.to_string()));
    }
    if let Some(s) = &cmd.status {
        filters.push(("status", s.clone()));
    }
    if let Some(room) = &cmd.room {
        filters.push(("roomId", c.resolve_room(room).await?.to_string()));
    }
    if let Some(t) = &cmd.issue_type {
        filters.push(("type", t.clone()));
    }
    if let Some(s) = &cmd.sort {
        filters.push(("sort", s.clone()));
    }
    let answer = c.issues(&filters).await?;
    let empty = Vec::new();
    let mut lines = Vec::new();
    for m in answer["issues"].as_array().unwrap_or(&empty) {
        let p = &m["issueProperties"];
        lines.push(format!(
            "{}\troom {}\t{}\t{}\t{}\t{}",
            m["messageId"],
            m["roomId"],
            p["status"].as_str().unwrap_or(""),
            p["type"].as_str().unwrap_or(""),
            m["priority"].as_str().unwrap_or(""),
            first_line(m)
        ));
    }
    if let Some(counts) = answer["countsByStatus"].as_object() {
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        lines.push(summary.join(", "));
    }
    ctx.out(answer.clone(), lines.join("\n"));
    Ok(())
}

pub async fn meetings(c: &mut Client, ctx: &Ctx, cmd: &MeetingsCmd) -> Result<(), ClientError> {
    if cmd.ics || cmd.id.is_some() {
        print!("{}", c.meetings_ics(cmd.id).await?);
        return Ok(());
    }
    let meetings = c.meetings(None, None).await?;
    let lines: Vec<String> = meetings
        .iter()
        .map(|m| {
            let p = &m["meetingProperties"];
            let start = p["timeUtc"].as_u64().unwrap_or(0);
            let minutes = p["duration"].as_u64().unwrap_or(0) / 60_000;
            format!(
                "{}\troom {}\t{}\t{minutes} min\t{}",
                m["messageId"],
                m["roomId"],
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(start)
                ),
                first_line(m)
            )
        })
        .collect();
    ctx.out(json!(meetings), lines.join("\n"));
    Ok(())
}

pub async fn set_status(c: &mut Client, ctx: &Ctx, cmd: &SetStatusCmd) -> Result<(), ClientError> {
    let user = c.set_status_text(&cmd.text).await?;
    ctx.out(
        user.clone(),
        format!("status: {}", user["statusText"].as_str().unwrap_or("")),
    );
    Ok(())
}
