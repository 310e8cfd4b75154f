//! The `confab` command line: the global options and every subcommand with its flags (the
//! account commands' own are in `account`). `main` dispatches on them.

use std::path::PathBuf;

use argh::FromArgs;

use crate::account;

/// Talk to a Confab server from the command line.
#[derive(FromArgs)]
pub struct Cli {
    /// server HOST:PORT (or CONFAB_SERVER; default localhost:7777)
    #[argh(option)]
    pub server: Option<String>,
    /// user name to log in as (or CONFAB_USER; default admin)
    #[argh(option)]
    pub user: Option<String>,
    /// file holding the password (otherwise CONFAB_PASSWORD)
    #[argh(option)]
    pub password_file: Option<PathBuf>,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
    /// trust certificates signed by this CA bundle (PEM)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// trust exactly the certificate with this SHA-256 fingerprint
    #[argh(option)]
    pub fingerprint: Option<String>,
    /// accept any certificate (testing only)
    #[argh(switch)]
    pub insecure: bool,
    /// trust the server's certificate if it verifies against the system's CA store (a
    /// certificate from a public CA); without it, such a certificate is trusted too, on
    /// first use, and not pinned
    #[argh(switch)]
    pub system_ca: bool,
    /// known-servers file for trust on first use (default ~/.config/confab/known_servers)
    #[argh(option)]
    pub known_servers: Option<PathBuf>,
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Command {
    Users(UsersCmd),
    CreateUser(CreateUserCmd),
    Rooms(RoomsCmd),
    CreateRoom(CreateRoomCmd),
    AddMember(AddMemberCmd),
    Members(MembersCmd),
    Send(SendCmd),
    History(HistoryCmd),
    Comment(CommentCmd),
    Comments(CommentsCmd),
    Delete(DeleteCmd),
    Read(ReadCmd),
    Follow(FollowCmd),
    Token(TokenCmd),
    Status(StatusCmd),
    RemoveMember(RemoveMemberCmd),
    Leave(LeaveCmd),
    Edit(EditCmd),
    React(ReactCmd),
    Pin(PinCmd),
    Upload(UploadCmd),
    Sync(SyncCmd),
    Download(DownloadCmd),
    Permissions(PermissionsCmd),
    SetPermission(SetPermissionCmd),
    Moderator(ModeratorCmd),
    RoomOptions(RoomOptionsCmd),
    Join(JoinCmd),
    Voice(VoiceCmd),
    Unread(UnreadCmd),
    Suspend(SuspendCmd),
    Reactivate(ReactivateCmd),
    ResetPassword(ResetPasswordCmd),
    Health(HealthCmd),
    Backup(BackupCmd),
    Push(crate::push::PushCmd),
    Passwd(account::PasswdCmd),
    DisplayName(account::DisplayNameCmd),
    Sessions(account::SessionsCmd),
    Logout(account::LogoutCmd),
    RenameUser(account::RenameUserCmd),
    RemoveUser(account::RemoveUserCmd),
    GrantAdmin(account::GrantAdminCmd),
    RevokeAdmin(account::RevokeAdminCmd),
    Totp(account::TotpCmd),
    Search(crate::collab::SearchCmd),
    Issues(crate::collab::IssuesCmd),
    Meetings(crate::collab::MeetingsCmd),
    SetStatus(crate::collab::SetStatusCmd),
}

/// list users
#[derive(FromArgs)]
#[argh(subcommand, name = "users")]
pub struct UsersCmd {}

/// create a user (administrators); prints its id (and a generated password)
#[derive(FromArgs)]
#[argh(subcommand, name = "create-user")]
pub struct CreateUserCmd {
    /// user name
    #[argh(positional)]
    pub name: String,
    /// file holding the new user's password (generated when absent)
    #[argh(option)]
    pub password_file: Option<PathBuf>,
    /// make the user an administrator
    #[argh(switch)]
    pub admin: bool,
}

/// list your rooms (administrators: every room with --all)
#[derive(FromArgs)]
#[argh(subcommand, name = "rooms")]
pub struct RoomsCmd {
    /// every room on the server, whether you belong to it or not (administrators)
    #[argh(switch)]
    pub all: bool,
}

/// create a group room; prints its id
#[derive(FromArgs)]
#[argh(subcommand, name = "create-room")]
pub struct CreateRoomCmd {
    /// room name
    #[argh(positional)]
    pub name: String,
    /// a member (user id or name); repeat for more
    #[argh(option)]
    pub member: Vec<String>,
}

/// add a member to a room (moderators and administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "add-member")]
pub struct AddMemberCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// user id or name
    #[argh(positional)]
    pub user: String,
}

/// list a room's members
#[derive(FromArgs)]
#[argh(subcommand, name = "members")]
pub struct MembersCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
}

/// send a message; prints its id once the server has stored it
#[derive(FromArgs)]
#[argh(subcommand, name = "send")]
pub struct SendCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// the text
    #[argh(positional)]
    pub text: String,
    /// the Idempotency-Key to send (default: a random one, reused for up to 3 attempts)
    #[argh(option)]
    pub idempotency_key: Option<String>,
}

/// show a room's messages, oldest first
#[derive(FromArgs)]
#[argh(subcommand, name = "history")]
pub struct HistoryCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// at most this many messages (the newest ones)
    #[argh(option)]
    pub limit: Option<usize>,
    /// only messages older than this message id
    #[argh(option)]
    pub before: Option<u64>,
    /// read the local copy made by `confab sync` (works offline)
    #[argh(switch)]
    pub local: bool,
    /// local store folder for --local
    #[argh(option)]
    pub store: Option<PathBuf>,
}

/// comment on a message; prints the comment's id
#[derive(FromArgs)]
#[argh(subcommand, name = "comment")]
pub struct CommentCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
    /// the text
    #[argh(positional)]
    pub text: String,
}

/// show a message's comments
#[derive(FromArgs)]
#[argh(subcommand, name = "comments")]
pub struct CommentsCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
}

/// delete a message
#[derive(FromArgs)]
#[argh(subcommand, name = "delete")]
pub struct DeleteCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
}

/// mark a message as read
#[derive(FromArgs)]
#[argh(subcommand, name = "read")]
pub struct ReadCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
}

/// print events as JSON lines until COUNT events or TIMEOUT seconds
#[derive(FromArgs)]
#[argh(subcommand, name = "follow")]
pub struct FollowCmd {
    /// stop after this many events
    #[argh(option)]
    pub count: Option<usize>,
    /// stop after this many seconds
    #[argh(option)]
    pub timeout: Option<u64>,
}

/// create a Web API access token (the previous one stops working) and print it
#[derive(FromArgs)]
#[argh(subcommand, name = "token")]
pub struct TokenCmd {}

/// remove a member from a room (moderators and administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "remove-member")]
pub struct RemoveMemberCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// user id or name
    #[argh(positional)]
    pub user: String,
}

/// leave a room
#[derive(FromArgs)]
#[argh(subcommand, name = "leave")]
pub struct LeaveCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
}

/// edit a message's text
#[derive(FromArgs)]
#[argh(subcommand, name = "edit")]
pub struct EditCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
    /// the new text
    #[argh(positional)]
    pub text: String,
}

/// react to a message with an emoji (--remove takes it back)
#[derive(FromArgs)]
#[argh(subcommand, name = "react")]
pub struct ReactCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
    /// the emoji
    #[argh(positional)]
    pub emoji: String,
    /// remove the reaction instead
    #[argh(switch)]
    pub remove: bool,
}

/// bring the local copy (rooms and messages you may see) up to date
#[derive(FromArgs)]
#[argh(subcommand, name = "sync")]
pub struct SyncCmd {
    /// local store folder (default ~/.local/share/confab/SERVER/USER)
    #[argh(option)]
    pub store: Option<PathBuf>,
}

/// attach files to a message (streamed; SHA-1 verified by the server)
#[derive(FromArgs)]
#[argh(subcommand, name = "upload")]
pub struct UploadCmd {
    /// message id
    #[argh(positional)]
    pub message_id: u64,
    /// files to attach
    #[argh(positional)]
    pub files: Vec<PathBuf>,
}

/// save a consistent backup of the running server (administrators): records, attachments
/// and its certificate in one archive, checked once received; restore it with
/// `confab-server --storage-dir NEW admin restore FILE`
#[derive(FromArgs)]
#[argh(subcommand, name = "backup")]
pub struct BackupCmd {
    /// the archive to write (replaced only once complete and checked)
    #[argh(option)]
    pub out: PathBuf,
}

/// download an attachment (to OUT, or to its own name in the current folder)
#[derive(FromArgs)]
#[argh(subcommand, name = "download")]
pub struct DownloadCmd {
    /// attachment id
    #[argh(positional)]
    pub attachment_id: u64,
    /// where to write it
    #[argh(positional)]
    pub out: Option<PathBuf>,
}

/// show your permissions in a room
#[derive(FromArgs)]
#[argh(subcommand, name = "permissions")]
pub struct PermissionsCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
}

/// set a permission: in a room (--room; moderators may only restrict), for one user in
/// it (--room and --user), or server-wide (--global, administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "set-permission")]
pub struct SetPermissionCmd {
    /// room id or unique name
    #[argh(option)]
    pub room: Option<String>,
    /// flag name, e.g. canSendMessagesInMainThread
    #[argh(positional)]
    pub flag: String,
    /// on, off, or inherit (back to the level above)
    #[argh(positional)]
    pub value: String,
    /// apply to this user only (id or name)
    #[argh(option)]
    pub user: Option<String>,
    /// change the server-wide default instead (administrators)
    #[argh(switch)]
    pub global: bool,
}

/// make a member a moderator of a room, or take it back (--off)
#[derive(FromArgs)]
#[argh(subcommand, name = "moderator")]
pub struct ModeratorCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// user id or name
    #[argh(positional)]
    pub user: String,
    /// take the role away
    #[argh(switch)]
    pub off: bool,
}

/// change a room's options (moderators; --auto-add: administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "room-options")]
pub struct RoomOptionsCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// join link: on, off or renew (prints the code)
    #[argh(option)]
    pub join_link: Option<String>,
    /// add users created from now on: on or off
    #[argh(option)]
    pub auto_add: Option<String>,
    /// members may leave: on or off
    #[argh(option)]
    pub members_may_leave: Option<String>,
    /// archive: on or off
    #[argh(option)]
    pub archived: Option<String>,
    /// new name
    #[argh(option)]
    pub name: Option<String>,
}

/// join a room's voice channel, send synthetic frames and print what arrived (JSON)
#[derive(FromArgs)]
#[argh(subcommand, name = "voice")]
pub struct VoiceCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// how long to send, in seconds (default 5)
    #[argh(option, default = "5.0")]
    pub duration: f64,
    /// packets per second (default 50)
    #[argh(option, default = "50")]
    pub pps: u32,
    /// payload bytes per packet (default 80, at least 16)
    #[argh(option, default = "80")]
    pub payload: usize,
    /// voice inside the event WebSocket instead of UDP
    #[argh(switch)]
    pub tcp: bool,
    /// aes-256-gcm (default) or chacha20-poly1305
    #[argh(option, default = "String::from(\"aes-256-gcm\")")]
    pub cipher: String,
    /// join to listen only
    #[argh(switch)]
    pub listen_only: bool,
    /// keep listening this many seconds after the last send (default 0.7)
    #[argh(option, default = "0.7")]
    pub drain: f64,
    /// send UDP to this port instead (to try the fallback when UDP does not get through)
    #[argh(option)]
    pub udp_port: Option<u16>,
}

/// join a room with the code of its join link
#[derive(FromArgs)]
#[argh(subcommand, name = "join")]
pub struct JoinCmd {
    /// the join code
    #[argh(positional)]
    pub code: String,
}

/// show your rooms with unread messages
#[derive(FromArgs)]
#[argh(subcommand, name = "unread")]
pub struct UnreadCmd {}

/// pin a room to the top of your list (--unpin undoes it)
#[derive(FromArgs)]
#[argh(subcommand, name = "pin")]
pub struct PinCmd {
    /// room id or unique name
    #[argh(positional)]
    pub room: String,
    /// unpin instead
    #[argh(switch)]
    pub unpin: bool,
}

/// suspend a user (administrators): their sessions stop at once, nothing is deleted
#[derive(FromArgs)]
#[argh(subcommand, name = "suspend")]
pub struct SuspendCmd {
    /// user id or name
    #[argh(positional)]
    pub user: String,
}

/// reactivate a suspended user (administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "reactivate")]
pub struct ReactivateCmd {
    /// user id or name
    #[argh(positional)]
    pub user: String,
}

/// set a user's password, generated and printed unless --password-file is given (administrators)
#[derive(FromArgs)]
#[argh(subcommand, name = "reset-password")]
pub struct ResetPasswordCmd {
    /// user id or name
    #[argh(positional)]
    pub user: String,
    /// file holding the new password
    #[argh(option)]
    pub password_file: Option<PathBuf>,
}

/// show who you are logged in as
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
pub struct StatusCmd {}

/// show the server's health figures
#[derive(FromArgs)]
#[argh(subcommand, name = "health")]
pub struct HealthCmd {}
