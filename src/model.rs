//! The JSON shapes of the Virola Web API v1 (and Confab's extensions), shared by
//! the server and the client library so both sides agree on every field name.

use serde::{Deserialize, Serialize};

pub type UserId = u64;
pub type RoomId = u64;
pub type MessageId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MarkupType {
    #[default]
    TextPlain,
    TextHtml,
    TextMarkdown,
    TextCode,
    TextLatex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MessageType {
    #[default]
    Regular,
    Issue,
    Meeting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Priority {
    Blocker,
    Critical,
    High,
    #[default]
    Normal,
    Low,
    Trivial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IssueType {
    Task,
    Subtask,
    Bug,
    Epic,
    Story,
    FeatureRequest,
    MergeRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IssueStatus {
    Backlog,
    ToDo,
    InProgress,
    ToVerify,
    Done,
    Declined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueProperties {
    #[serde(rename = "type")]
    pub issue_type: IssueType,
    pub status: IssueStatus,
    #[serde(default)]
    pub assignees: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeetingProperties {
    pub time_utc: u64,
    /// Duration in milliseconds.
    pub duration: u64,
}

/// One emoji and who reacted with it (Confab extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    pub emoji: String,
    pub user_ids: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadTimestamp {
    pub user_id: UserId,
    pub read_utc: u64,
}

/// One attachment as the API describes it (attachment upload arrives with the next milestone;
/// the field is always present so clients can rely on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub attachment_id: u64,
    pub attachment_state: String,
    pub created_utc: u64,
    pub file_checksum: String,
    pub file_name: String,
    pub file_size: u64,
    pub has_thumbnail: bool,
    pub last_modified_utc: u64,
    pub room_id: RoomId,
    pub text_message_id: MessageId,
}

/// A text message (or a comment, when `parent_message_id != 0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextMessage {
    pub message_id: MessageId,
    pub parent_message_id: MessageId,
    pub user_id: UserId,
    pub room_id: RoomId,
    pub text: String,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    pub last_edited_utc: u64,
    pub markup_type: MarkupType,
    pub message_type: MessageType,
    pub priority: Priority,
    pub comment_count: u64,
    pub attachments: Vec<Attachment>,
    pub read_timestamps: Vec<ReadTimestamp>,
    /// Extension: emoji reactions (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_properties: Option<IssueProperties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_properties: Option<MeetingProperties>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomType {
    /// A conversation between exactly two users.
    Private,
    /// A group room.
    Public,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastMessage {
    pub message_id: MessageId,
    pub user_id: UserId,
    pub created_utc: u64,
}

/// A room as one user sees it (`displayName`, `unreadMessageCount`, `isModerator` and
/// `isPinned` are per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub room_id: RoomId,
    pub display_name: String,
    pub room_type: RoomType,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    pub unread_message_count: u64,
    pub is_archived: bool,
    pub is_moderator: bool,
    pub is_pinned: bool,
    pub last_message: Option<LastMessage>,
    pub discussion_message_id: Option<MessageId>,
    /// Extension: members may leave the room themselves.
    pub members_may_leave: bool,
    /// Extension: users created later join the room automatically.
    pub auto_add_new_users: bool,
    /// Extension: the code of the room's join link; shown to moderators and administrators
    /// only, absent when joining by link is off.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub join_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    Active,
    Suspended,
    DeletionInProgress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: UserId,
    pub user_name: String,
    pub display_name: String,
    pub is_admin: bool,
    pub status: UserStatus,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    /// Extension: `online`, `away` or `offline` (absent where the server did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
    /// Extension: the user's own status line (absent when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_text: String,
}

/// Whether a user is around (extension): `online` with a live event session, `away` when
/// all their clients report idle or nothing happened for a while, else `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// Declares the permission flags once: the `RoomPermissions` struct of
/// `GET /api/v1/room-permissions/{roomId}`, a `Permission` enum naming each flag, and the
/// accessors the three permission levels (global, room, user) are computed with.
macro_rules! permission_flags {
    ($($field:ident => $variant:ident = $name:literal,)*) => {
        /// The permission flags of `GET /api/v1/room-permissions/{roomId}`.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct RoomPermissions {
            $(pub $field: bool,)*
        }

        /// One flag of [`RoomPermissions`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Permission {
            $($variant,)*
        }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The flag's name in the API's JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            pub fn from_name(name: &str) -> Option<Permission> {
                match name {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }

        impl RoomPermissions {
            /// Every flag set: what administrators and room moderators have, and the
            /// built-in global default.
            pub fn all_allowed() -> Self {
                RoomPermissions { $($field: true,)* }
            }

            pub fn allows(&self, p: Permission) -> bool {
                match p {
                    $(Permission::$variant => self.$field,)*
                }
            }

            pub fn set(&mut self, p: Permission, allowed: bool) {
                match p {
                    $(Permission::$variant => self.$field = allowed,)*
                }
            }
        }
    };
}

permission_flags! {
    can_attach_or_delete_files_in_own_messages_in_discussion => CanAttachOrDeleteFilesInOwnMessagesInDiscussion = "canAttachOrDeleteFilesInOwnMessagesInDiscussion",
    can_attach_or_delete_files_in_own_messages_in_main_thread => CanAttachOrDeleteFilesInOwnMessagesInMainThread = "canAttachOrDeleteFilesInOwnMessagesInMainThread",
    can_change_properties_of_unrelated_issues => CanChangePropertiesOfUnrelatedIssues = "canChangePropertiesOfUnrelatedIssues",
    can_create_issues => CanCreateIssues = "canCreateIssues",
    can_create_meetings => CanCreateMeetings = "canCreateMeetings",
    can_edit_or_delete_own_messages_in_discussion => CanEditOrDeleteOwnMessagesInDiscussion = "canEditOrDeleteOwnMessagesInDiscussion",
    can_edit_or_delete_own_messages_in_main_thread => CanEditOrDeleteOwnMessagesInMainThread = "canEditOrDeleteOwnMessagesInMainThread",
    can_intercom_listen => CanIntercomListen = "canIntercomListen",
    can_intercom_stream_video => CanIntercomStreamVideo = "canIntercomStreamVideo",
    can_intercom_talk => CanIntercomTalk = "canIntercomTalk",
    can_intercom_watch_video => CanIntercomWatchVideo = "canIntercomWatchVideo",
    can_react_to_messages_with_emoji_in_discussion => CanReactToMessagesWithEmojiInDiscussion = "canReactToMessagesWithEmojiInDiscussion",
    can_react_to_messages_with_emoji_in_main_thread => CanReactToMessagesWithEmojiInMainThread = "canReactToMessagesWithEmojiInMainThread",
    can_record_meetings => CanRecordMeetings = "canRecordMeetings",
    can_send_files_into_room_in_discussion => CanSendFilesIntoRoomInDiscussion = "canSendFilesIntoRoomInDiscussion",
    can_send_files_into_room_in_main_thread => CanSendFilesIntoRoomInMainThread = "canSendFilesIntoRoomInMainThread",
    can_send_messages_in_discussion => CanSendMessagesInDiscussion = "canSendMessagesInDiscussion",
    can_send_messages_in_main_thread => CanSendMessagesInMainThread = "canSendMessagesInMainThread",
    can_send_nudge => CanSendNudge = "canSendNudge",
    can_share_screen => CanShareScreen = "canShareScreen",
    can_use_intercom => CanUseIntercom = "canUseIntercom",
    ui_can_see_room_sidebar => UiCanSeeRoomSidebar = "uiCanSeeRoomSidebar",
    ui_can_see_who_read_message_in_discussion => UiCanSeeWhoReadMessageInDiscussion = "uiCanSeeWhoReadMessageInDiscussion",
    ui_can_see_who_read_message_in_main_thread => UiCanSeeWhoReadMessageInMainThread = "uiCanSeeWhoReadMessageInMainThread",
}

impl Permission {
    /// The flag for an action in the main thread (`false`) or a discussion (`true`).
    pub fn in_thread(main: Permission, discussion: Permission, is_comment: bool) -> Permission {
        if is_comment {
            discussion
        } else {
            main
        }
    }
}

/// Body of `POST /api/v1/rooms/{id}/messages` and `POST /api/v1/messages/{id}/comments`.
/// `content` is the documented field; the rest are Confab extensions, all optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMessage {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markup_type: Option<MarkupType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_properties: Option<IssueProperties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_properties: Option<MeetingProperties>,
    /// Extension: post a comment through the room endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_message_id: Option<MessageId>,
}

/// One event on `/api/v1/events`: `{"type": "...", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: serde_json::Value,
}

/// The error body every failing endpoint returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_text: String,
    pub http_status_code: u16,
}
