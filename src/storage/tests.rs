//! Unit tests of the storage layer on a real sled database in a temporary folder.

use std::ops::Bound;

use super::*;

fn open(dir: &std::path::Path) -> (FolderLock, Store) {
    let lock = prepare_folder(dir).expect("folder");
    (
        lock,
        Store::open_with(
            dir,
            &StoreOptions {
                cache_bytes: 8 << 20,
                reserve_bytes: 0,
                ..StoreOptions::default()
            },
        )
        .expect("open"),
    )
}

fn store() -> (tempfile::TempDir, FolderLock, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lock, store) = open(dir.path());
    (dir, lock, store)
}

fn message(store: &Store, room: RoomId, parent: MessageId) -> MessageRecord {
    let record = MessageRecord {
        message_id: store.next_message_id(),
        parent_message_id: parent,
        room_id: room,
        user_id: 1,
        text: "t".into(),
        created_utc: 1,
        last_modified_utc: 1,
        last_edited_utc: 1,
        markup_type: MarkupType::TextPlain,
        message_type: MessageType::Regular,
        priority: Priority::Normal,
        comment_count: 0,
        issue_properties: None,
        meeting_properties: None,
        seq: if parent == 0 {
            store.latest().room_seq(room).expect("seq") + 1
        } else {
            0
        },
    };
    store
        .post_message(NewPost {
            record: &record,
            parent: None,
            idempotency: None,
            push: &[],
        })
        .expect("post");
    record
}

#[actix_rt::test]
async fn pages_stay_within_their_room_and_respect_cursor_edges() {
    let (_d, _lock, store) = store();
    // Interleave two rooms so a page that leaked across the key prefix would show it.
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(message(&store, 7, 0).message_id);
        message(&store, 8, 0);
    }
    store.durable().await.expect("durable");
    let page = |c, l, d| store.room_message_ids(7, c, l, d).expect("page");
    assert_eq!(page(None, None, Direction::Forward), a);
    assert_eq!(page(None, Some(2), Direction::Backward), a[3..]);
    assert_eq!(page(Some(a[2]), Some(10), Direction::Backward), a[..2]);
    assert_eq!(page(Some(a[2]), Some(1), Direction::Forward), a[3..4]);
    assert!(page(Some(a[0]), None, Direction::Backward).is_empty());
    assert!(page(Some(a[4]), None, Direction::Forward).is_empty());
    assert!(page(Some(u64::MAX), None, Direction::Forward).is_empty());
    assert_eq!(page(Some(u64::MAX), Some(1), Direction::Backward), a[4..]);
    assert!(store
        .room_message_ids(9, None, None, Direction::Backward)
        .expect("page")
        .is_empty());
}

#[actix_rt::test]
async fn the_durable_view_shows_a_write_only_once_it_is_on_the_device() {
    let (_d, _lock, store) = store();
    let m = message(&store, 3, 0);
    assert!(
        store.message(m.message_id).expect("read").is_none(),
        "not durable yet"
    );
    assert!(store
        .latest()
        .message(m.message_id)
        .expect("read")
        .is_some());
    assert!(store
        .room_message_ids(3, None, None, Direction::Forward)
        .expect("page")
        .is_empty());
    assert_eq!(store.last_change_seq(), 0);
    store.durable().await.expect("durable");
    assert!(store.message(m.message_id).expect("read").is_some());
    assert_eq!(
        store
            .room_message_ids(3, None, None, Direction::Forward)
            .expect("page"),
        vec![m.message_id]
    );
    assert_eq!(store.last_change_seq(), 1);

    // An edit not yet durable: readers still see the old text.
    let mut edited = m.clone();
    edited.text = "new".into();
    store.edit_message(&edited).expect("edit");
    assert_eq!(
        store
            .message(m.message_id)
            .expect("read")
            .expect("there")
            .text,
        "t"
    );
    // A delete not yet durable: still listed.
    let (_, _) = store.delete_messages(&edited, &[], None).expect("delete");
    assert_eq!(
        store
            .room_message_ids(3, None, None, Direction::Backward)
            .expect("page"),
        vec![m.message_id]
    );
    store.durable().await.expect("durable");
    assert!(store.message(m.message_id).expect("read").is_none());
    assert!(store.tombstone(m.message_id).expect("read").is_some());
}

#[actix_rt::test]
async fn unread_counts_follow_the_read_position() {
    let (_d, _lock, store) = store();
    let ids: Vec<_> = (0..4).map(|_| message(&store, 3, 0)).collect();
    store.durable().await.expect("durable");
    assert_eq!(store.unread_count(2, 3).expect("count"), 4);
    assert!(store
        .mark_read(&ids[1], 2, 10, &[])
        .expect("read")
        .is_some());
    assert!(store
        .mark_read(&ids[1], 2, 11, &[])
        .expect("read")
        .is_none());
    store.durable().await.expect("durable");
    assert_eq!(store.unread_count(2, 3).expect("count"), 2);
    // Reading an older message never moves the position back.
    store.mark_read(&ids[0], 2, 12, &[]).expect("read");
    store.durable().await.expect("durable");
    assert_eq!(store.unread_count(2, 3).expect("count"), 2);
    assert_eq!(
        store.read_timestamps(ids[1].message_id).expect("ts")[0].read_utc,
        10
    );
}

#[actix_rt::test]
async fn ids_stay_above_their_high_water_marks_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (last, deleted_attachment) = {
        let (_lock, store) = open(dir.path());
        store
            .create_user("Ann", "Ann", String::new(), false)
            .expect("user");
        assert!(matches!(
            store.create_user("ann", "x", String::new(), false),
            Err(StorageError::Conflict(_))
        ));
        let m = message(&store, 1, 0);
        // The newest message is deleted, so no record holds its id any more.
        let n = message(&store, 1, 0);
        store.delete_messages(&n, &[], None).expect("delete");
        // An id handed out by a unit that never applied is skipped, not reused.
        let skipped = store.next_id(IdKind::Attachment);
        let mut unit = WriteUnit::new(Scope::Server);
        unit.uses_id(IdKind::Attachment, skipped);
        unit.put(Table::SettingValue, b"x", b"y".to_vec());
        store.apply(unit).expect("apply");
        store.flush().expect("flush");
        assert!(n.message_id > m.message_id);
        (n.message_id, skipped)
    };
    let (_lock, store) = open(dir.path());
    assert!(store.next_message_id() > last);
    assert!(store.next_id(IdKind::Attachment) > deleted_attachment);
    assert_eq!(
        store
            .user_by_name("ANN")
            .expect("lookup")
            .map(|u| u.user_id),
        Some(1)
    );
}

#[actix_rt::test]
async fn a_failed_precondition_applies_nothing_and_cas_retries() {
    let (_d, _lock, store) = store();
    let mut unit = WriteUnit::new(Scope::Server);
    unit.put(Table::SettingValue, b"a", b"1".to_vec());
    unit.log(Change::Room { room_id: 9 });
    unit.require_absent(Table::SettingValue, b"a", "exists");
    store.apply(unit).expect("first");
    let mut unit = WriteUnit::new(Scope::Server);
    unit.put(Table::SettingValue, b"b", b"2".to_vec());
    unit.log(Change::Room { room_id: 9 });
    unit.require_absent(Table::SettingValue, b"a", "exists");
    assert!(matches!(store.apply(unit), Err(StorageError::Conflict(_))));
    let r = store.latest();
    assert!(
        r.get(Table::SettingValue, b"b").expect("get").is_none(),
        "nothing of it applied"
    );
    let changes = r
        .scan(
            Table::ChangeseqChange,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            10,
        )
        .expect("scan");
    assert_eq!(changes.len(), 1, "no change-log entry either, and no gap");

    // Compare-and-swap: an update built on a stale value is rebuilt on the new one.
    let mut first = true;
    let done = store
        .apply_cas(Table::SettingValue, b"a", |cur| {
            if first {
                first = false;
                // Someone else writes in between.
                let mut other = WriteUnit::new(Scope::Server);
                other.put(Table::SettingValue, b"a", b"10".to_vec());
                store.apply(other)?;
            }
            let n: u64 = String::from_utf8_lossy(&cur.expect("value"))
                .parse()
                .unwrap_or(0);
            let mut unit = WriteUnit::new(Scope::Server);
            unit.put(Table::SettingValue, b"a", (n + 1).to_string().into_bytes());
            Ok(Some((unit, ())))
        })
        .expect("cas");
    assert!(done.is_some());
    assert_eq!(
        r.get(Table::SettingValue, b"a").expect("get").as_deref(),
        Some(&b"11"[..])
    );
}

#[actix_rt::test]
async fn counters_are_read_modify_written_under_the_apply_lock() {
    let (_d, _lock, store) = store();
    let mut unit = WriteUnit::new(Scope::Server);
    unit.add_to_counter(Table::UseridQuotaused, be(5), 100);
    unit.add_to_counter(Table::UseridQuotaused, be(5), 20);
    store.apply(unit).expect("apply");
    assert_eq!(store.latest().quota_used(5).expect("quota"), 120);
    let mut unit = WriteUnit::new(Scope::Server);
    unit.add_to_counter(Table::UseridQuotaused, be(5), -500);
    store.apply(unit).expect("apply");
    assert_eq!(store.latest().quota_used(5).expect("quota"), 0);
    assert!(store
        .latest()
        .get(Table::UseridQuotaused, be(5))
        .expect("get")
        .is_none());
}

/// A folder of schema 2 (no session or auto-add index) gets both indexes when opened.
#[actix_rt::test]
async fn opening_a_schema_2_folder_builds_the_session_and_auto_add_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let room = RoomRecord {
        room_id: 1,
        name: "All hands".into(),
        room_type: RoomType::Public,
        creator_id: 1,
        created_utc: 1,
        last_modified_utc: 1,
        is_archived: false,
        members_may_leave: true,
        auto_add_new_users: true,
        join_code: None,
    };
    {
        let (_lock, store) = open(dir.path());
        store.create_session(1, "one").expect("session");
        store.create_session(1, "two").expect("session");
        store.create_session(2, "other").expect("session");
        store.create_room(&room, &[1]).expect("room");
        store.durable().await.expect("durable");
    }
    {
        // Back to what a schema-2 server left: no index entries, version 2.
        let trees = Trees::open(&dir.path().join("db"), 8 << 20).expect("trees");
        trees[Table::UseridSessionhash].clear().expect("clear");
        trees[Table::AutoaddRoomid].clear().expect("clear");
        trees[Table::Meta]
            .insert("schema_version", &2u32.to_be_bytes())
            .expect("version");
        trees.db.flush().expect("flush");
    }
    let (_lock, store) = open(dir.path());
    assert_eq!(store.auto_add_room_ids().expect("ids"), vec![1]);
    assert_eq!(store.delete_sessions_of(1).expect("ended"), 2);
    assert_eq!(store.session_user("other").expect("read"), Some(2));
    assert_eq!(store.latest().session_user("one").expect("read"), None);
}

/// Posts a message of `kind` (with its properties) in `room`.
fn typed_message(store: &Store, room: RoomId, kind: MessageType) -> MessageRecord {
    let mut record = message(store, room, 0);
    record.message_type = kind;
    match kind {
        MessageType::Issue => {
            record.issue_properties = Some(crate::model::IssueProperties {
                issue_type: crate::model::IssueType::Bug,
                status: crate::model::IssueStatus::ToDo,
                assignees: vec![1],
            })
        }
        MessageType::Meeting => {
            record.meeting_properties = Some(crate::model::MeetingProperties {
                time_utc: 5,
                duration: 10,
            })
        }
        MessageType::Regular => {}
    }
    store.edit_message(&record).expect("edit");
    record
}

/// The issue and meeting lists follow posts, edits that change the type, and deletes; a
/// schema-3 folder (which has no lists) gets them when opened.
#[actix_rt::test]
async fn issue_and_meeting_lists_follow_writes_and_are_built_for_a_schema_3_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (issue, meeting, other_issue);
    {
        let (_lock, store) = open(dir.path());
        issue = typed_message(&store, 1, MessageType::Issue);
        meeting = typed_message(&store, 1, MessageType::Meeting);
        other_issue = typed_message(&store, 2, MessageType::Issue);
        let plain = message(&store, 1, 0);
        let gone = typed_message(&store, 1, MessageType::Issue);
        store.delete_messages(&gone, &[], None).expect("delete");
        // An issue edited into a meeting moves from one list to the other.
        let moved = typed_message(&store, 2, MessageType::Issue);
        let mut as_meeting = moved.clone();
        as_meeting.message_type = MessageType::Meeting;
        as_meeting.meeting_properties = Some(crate::model::MeetingProperties {
            time_utc: 1,
            duration: 1,
        });
        store.edit_message(&as_meeting).expect("edit");
        store.durable().await.expect("durable");
        let r = store.latest();
        assert_eq!(r.room_issue_ids(1).expect("ids"), vec![issue.message_id]);
        assert_eq!(
            r.room_issue_ids(2).expect("ids"),
            vec![other_issue.message_id]
        );
        assert_eq!(
            r.room_meeting_ids(1).expect("ids"),
            vec![meeting.message_id]
        );
        assert_eq!(r.room_meeting_ids(2).expect("ids"), vec![moved.message_id]);
        assert!(!r
            .room_issue_ids(1)
            .expect("ids")
            .contains(&plain.message_id));
    }
    {
        // Back to what a schema-3 server left: no lists, version 3.
        let trees = Trees::open(&dir.path().join("db"), 8 << 20).expect("trees");
        trees[Table::RoomidIssueid].clear().expect("clear");
        trees[Table::RoomidMeetingid].clear().expect("clear");
        trees[Table::Meta]
            .insert("schema_version", &3u32.to_be_bytes())
            .expect("version");
        trees.db.flush().expect("flush");
    }
    let (_lock, store) = open(dir.path());
    assert_eq!(
        store.room_issue_ids(1).expect("ids"),
        vec![issue.message_id]
    );
    assert_eq!(
        store.room_issue_ids(2).expect("ids"),
        vec![other_issue.message_id]
    );
    assert_eq!(
        store.room_meeting_ids(1).expect("ids"),
        vec![meeting.message_id]
    );
    assert_eq!(store.room_meeting_ids(2).expect("ids").len(), 1);
}
