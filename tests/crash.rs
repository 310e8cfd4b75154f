//! The crash campaign: a mixed workload (posts, comments, edits, deletes, reactions, read
//! receipts, uploads, membership changes, room creation) from several clients while the
//! real server is killed with `kill -9` at random moments, many times in a row on one
//! storage folder. After each kill the offline check must find the folder sound; after each
//! restart every acknowledged write is there, nothing is there twice, and a retry of a write
//! whose answer was lost (same Idempotency-Key) stores it once.
//!
//! `CONFAB_CRASH_CYCLES` sets the number of kills (default 50; `confab-bench` runs longer
//! campaigns the same way).

mod util;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use confab::client::{Client, ClientError};
use confab::model::NewMessage;
use rand::{Rng, SeedableRng};
use util::*;

/// What the server must hold about one message.
#[derive(Debug, Clone, Default)]
struct Expected {
    room: u64,
    parent: u64,
    author: usize,
    /// Texts it may have: the last acknowledged edit, plus edits whose answer was lost.
    texts: BTreeSet<String>,
    deleted: bool,
    /// A delete whose answer was lost: it may be gone.
    maybe_deleted: bool,
    reactions: BTreeSet<(u64, String)>,
    readers: BTreeSet<u64>,
    /// Attachment id → file size, acknowledged.
    files: BTreeMap<u64, u64>,
}

#[derive(Default)]
struct Model {
    rooms: Vec<u64>,
    messages: BTreeMap<u64, Expected>,
    /// Posts whose answer was lost: (client, room, parent, key, text).
    unanswered: Vec<(usize, u64, u64, String, String)>,
    /// room → users acknowledged as members, and users whose change was not answered.
    members: HashMap<u64, (BTreeSet<u64>, BTreeSet<u64>)>,
    counter: u64,
    acked: u64,
}

type Shared = Rc<RefCell<Model>>;

/// What a new comment's fate is, given its parent's as the model knows it when the
/// comment's answer is read. Clients run concurrently: another may have deleted the parent
/// between the comment being stored and its answer being read here. A comment the server
/// accepted was stored before any delete of its parent (after it, the post is 404/410),
/// so it went with the parent: (deleted, maybe deleted).
fn parent_fate(m: &Model, parent: Option<u64>) -> (bool, bool) {
    match parent.and_then(|p| m.messages.get(&p)) {
        Some(p) => (p.deleted, p.maybe_deleted),
        None => (false, false),
    }
}

/// What happened to one request.
enum Outcome<T> {
    Done(T),
    /// Refused (4xx): nothing changed.
    Refused,
    /// No answer (killed server) or 5xx: it may or may not have happened.
    Unknown,
}

fn outcome<T>(r: Result<T, ClientError>) -> Outcome<T> {
    match r {
        Ok(v) => Outcome::Done(v),
        Err(ClientError::Api { status, .. }) if (400..500).contains(&status) => Outcome::Refused,
        Err(_) => Outcome::Unknown,
    }
}

const USERS: usize = 4;

/// One client's random writes until the server dies. `ids[i]` is user i's id.
async fn workload(mut c: Client, me: usize, ids: [u64; USERS], model: Shared, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let mut unknowns = 0;
    loop {
        let (room, target) = {
            let m = model.borrow();
            let room = m.rooms[rng.gen_range(0..m.rooms.len())];
            let live: Vec<u64> = m
                .messages
                .iter()
                .filter(|(_, e)| e.room == room && !e.deleted && !e.maybe_deleted)
                .map(|(id, _)| *id)
                .collect();
            let target = (!live.is_empty()).then(|| live[rng.gen_range(0..live.len())]);
            (room, target)
        };
        let n = {
            let mut m = model.borrow_mut();
            m.counter += 1;
            m.counter
        };
        let roll = rng.gen_range(0..100);
        let unknown = match (roll, target) {
            (0..=34, _) | (_, None) => {
                let parent = if roll % 3 == 0 { target } else { None };
                let parent = parent.filter(|p| model.borrow().messages[p].parent == 0);
                let text = format!("c{me}-{n}-{}", rng.gen::<u32>());
                let key = format!("key-{me}-{n}");
                let draft = NewMessage {
                    content: text.clone(),
                    parent_message_id: parent,
                    ..Default::default()
                };
                let r = match parent {
                    Some(p) => c.comment_idempotent(p, &text, &key).await,
                    None => c.send_idempotent(room, &draft, &key).await,
                };
                match outcome(r) {
                    Outcome::Done(msg) => {
                        let mut m = model.borrow_mut();
                        m.acked += 1;
                        let (deleted, maybe_deleted) = parent_fate(&m, parent);
                        m.messages.insert(
                            msg.message_id,
                            Expected {
                                room,
                                parent: parent.unwrap_or(0),
                                author: me,
                                texts: [text].into(),
                                deleted,
                                maybe_deleted,
                                ..Default::default()
                            },
                        );
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Unknown => {
                        model.borrow_mut().unanswered.push((
                            me,
                            room,
                            parent.unwrap_or(0),
                            key,
                            text,
                        ));
                        true
                    }
                }
            }
            (35..=49, Some(t)) => {
                let mine = model.borrow().messages[&t].author == me;
                if !mine {
                    continue;
                }
                let text = format!("e{me}-{n}");
                match outcome(c.edit(t, &text).await) {
                    Outcome::Done(_) => {
                        let mut m = model.borrow_mut();
                        m.acked += 1;
                        m.messages.get_mut(&t).unwrap().texts = [text].into();
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Unknown => {
                        model
                            .borrow_mut()
                            .messages
                            .get_mut(&t)
                            .unwrap()
                            .texts
                            .insert(text);
                        true
                    }
                }
            }
            (50..=56, Some(t)) => match outcome(c.delete_message(t).await) {
                Outcome::Done(()) => {
                    let mut m = model.borrow_mut();
                    m.acked += 1;
                    m.messages.get_mut(&t).unwrap().deleted = true;
                    // A top-level message takes its comments with it.
                    for e in m.messages.values_mut().filter(|e| e.parent == t) {
                        e.deleted = true;
                    }
                    false
                }
                Outcome::Refused => false,
                Outcome::Unknown => {
                    let mut m = model.borrow_mut();
                    m.messages.get_mut(&t).unwrap().maybe_deleted = true;
                    for e in m.messages.values_mut().filter(|e| e.parent == t) {
                        e.maybe_deleted = true;
                    }
                    true
                }
            },
            (57..=69, Some(t)) => {
                let emoji = ["👍", "🎉", "ok"][rng.gen_range(0..3)].to_string();
                match outcome(c.react(t, &emoji, true).await) {
                    Outcome::Done(_) => {
                        let mut m = model.borrow_mut();
                        m.acked += 1;
                        m.messages
                            .get_mut(&t)
                            .unwrap()
                            .reactions
                            .insert((ids[me], emoji));
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Unknown => true,
                }
            }
            (70..=81, Some(t)) => match outcome(c.mark_read(t).await) {
                Outcome::Done(()) => {
                    let mut m = model.borrow_mut();
                    m.acked += 1;
                    m.messages.get_mut(&t).unwrap().readers.insert(ids[me]);
                    false
                }
                Outcome::Refused => false,
                Outcome::Unknown => true,
            },
            (82..=87, Some(t)) => {
                if model.borrow().messages[&t].author != me {
                    continue;
                }
                let size = rng.gen_range(1..40_000usize);
                let path = tmp.path().join(format!("f{n}.bin"));
                std::fs::write(&path, vec![(n % 251) as u8; size]).unwrap();
                match outcome(c.upload(t, &[path], false).await) {
                    Outcome::Done(files) => {
                        let mut m = model.borrow_mut();
                        m.acked += 1;
                        m.messages
                            .get_mut(&t)
                            .unwrap()
                            .files
                            .insert(files[0].attachment_id, size as u64);
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Unknown => true,
                }
            }
            (88..=96, _) if me == 0 => {
                // Membership of user 3 (the administrator, client 0, owns every room).
                let user = ids[3];
                let add = rng.gen_bool(0.5);
                let r = if add {
                    c.add_member(room, user).await
                } else {
                    c.remove_member(room, user).await
                };
                let mut m = model.borrow_mut();
                let entry = m.members.entry(room).or_default();
                match outcome(r) {
                    Outcome::Done(()) => {
                        entry.1.remove(&user);
                        if add {
                            entry.0.insert(user);
                        } else {
                            entry.0.remove(&user);
                        }
                        m.acked += 1;
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Unknown => {
                        entry.1.insert(user);
                        true
                    }
                }
            }
            (97..=99, _) if me == 0 => {
                let others: Vec<u64> = ids[1..3].to_vec();
                match outcome(c.create_room(&format!("room {n}"), &others).await) {
                    Outcome::Done(r) => {
                        let mut m = model.borrow_mut();
                        m.acked += 1;
                        m.rooms.push(r);
                        let mut members: BTreeSet<u64> = ids[..3].iter().copied().collect();
                        members.insert(ids[0]);
                        m.members.insert(r, (members, BTreeSet::new()));
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Unknown => true,
                }
            }
            _ => continue,
        };
        if unknown {
            unknowns += 1;
            // The server is gone (or failing): stop here.
            if unknowns >= 1 {
                return;
            }
        }
    }
}

/// Checks the restarted server against the model; answers of lost posts are retried with
/// their keys and become acknowledged.
async fn verify(clients: &mut [Client], model: &Shared, cycle: usize) {
    // The workload is over: the model is ours until it goes back at the end.
    let mut owned = std::mem::take(&mut *model.borrow_mut());
    let m = &mut owned;
    let c = &mut clients[0];
    let mut texts: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<u64, confab::model::TextMessage> = HashMap::new();
    for &room in &m.rooms {
        for msg in c.history(room, None, None, None).await.expect("history") {
            if msg.comment_count > 0 {
                for com in c
                    .comments(msg.message_id, None, None, None)
                    .await
                    .expect("comments")
                {
                    *texts.entry(com.text.clone()).or_default() += 1;
                    seen.insert(com.message_id, com);
                }
            }
            *texts.entry(msg.text.clone()).or_default() += 1;
            seen.insert(msg.message_id, msg);
        }
    }
    for (text, n) in &texts {
        assert_eq!(*n, 1, "cycle {cycle}: '{text}' is stored {n} times");
    }
    for (id, e) in m.messages.iter_mut() {
        if e.deleted {
            assert!(
                !seen.contains_key(id),
                "cycle {cycle}: deleted message {id} came back"
            );
            continue;
        }
        let Some(got) = seen.get(id) else {
            assert!(
                e.maybe_deleted,
                "cycle {cycle}: acknowledged message {id} lost: {e:?}"
            );
            e.deleted = true;
            continue;
        };
        e.maybe_deleted = false;
        assert!(
            e.texts.contains(&got.text),
            "cycle {cycle}: message {id} has '{}', expected one of {:?}",
            got.text,
            e.texts
        );
        e.texts = [got.text.clone()].into();
        for (user, emoji) in &e.reactions {
            assert!(
                got.reactions
                    .iter()
                    .any(|r| &r.emoji == emoji && r.user_ids.contains(user)),
                "cycle {cycle}: reaction {emoji} of {user} on {id} lost"
            );
        }
        for reader in &e.readers {
            assert!(
                got.read_timestamps.iter().any(|r| r.user_id == *reader),
                "cycle {cycle}: read receipt of {reader} on {id} lost"
            );
        }
        for (aid, size) in &e.files {
            let a = got.attachments.iter().find(|a| a.attachment_id == *aid);
            assert_eq!(
                a.map(|a| a.file_size),
                Some(*size),
                "cycle {cycle}: file {aid} of {id} lost"
            );
        }
    }
    // Lost answers: at most once so far, and exactly once after a retry with the same key.
    for (me, room, parent, key, text) in std::mem::take(&mut m.unanswered) {
        let before = texts.get(&text).copied().unwrap_or(0);
        assert!(before <= 1);
        // Keys are per user: the retry comes from the same user.
        let c = &mut clients[me];
        let r = if parent == 0 {
            let draft = NewMessage {
                content: text.clone(),
                ..Default::default()
            };
            c.send_idempotent(room, &draft, &key).await
        } else {
            c.comment_idempotent(parent, &text, &key).await
        };
        match r {
            Ok(msg) => {
                let (deleted, maybe_deleted) = parent_fate(m, (parent != 0).then_some(parent));
                if before == 1 {
                    assert_eq!(
                        seen.get(&msg.message_id).map(|s| &s.text),
                        Some(&text),
                        "cycle {cycle}: the retry of '{text}' answered another message"
                    );
                }
                m.messages.insert(
                    msg.message_id,
                    Expected {
                        room,
                        parent,
                        author: me,
                        texts: [text].into(),
                        deleted,
                        maybe_deleted,
                        ..Default::default()
                    },
                );
            }
            // The poster was removed from the room meanwhile: refused, stored or not.
            Err(e) if e.status() == Some(403) => {}
            // Its parent was deleted meanwhile (with it, had it been stored).
            Err(e) if matches!(e.status(), Some(404) | Some(410)) => {
                assert_eq!(
                    before, 0,
                    "cycle {cycle}: '{text}' is stored, but its retry says {e}"
                );
            }
            Err(e) => panic!("cycle {cycle}: retrying '{text}': {e}"),
        }
    }
    let c = &mut clients[0];
    for (room, (members, unsure)) in m.members.iter_mut() {
        let listed: BTreeSet<u64> = c
            .members(*room)
            .await
            .expect("members")
            .iter()
            .map(|v| v["userId"].as_u64().unwrap())
            .collect();
        for u in listed.symmetric_difference(members) {
            assert!(
                unsure.contains(u),
                "cycle {cycle}: membership of {u} in room {room} is wrong"
            );
        }
        *members = listed;
        unsure.clear();
    }
    *model.borrow_mut() = owned;
}

#[actix_rt::test]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let cycles: usize = std::env::var("CONFAB_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let mut ids = [1u64; USERS];
    for (i, id) in ids.iter_mut().enumerate().skip(1) {
        *id = admin
            .create_user(
                &format!("user{i}"),
                Some(&format!("password-of-{i}")),
                false,
            )
            .await
            .unwrap()
            .0;
    }
    let model: Shared = Rc::new(RefCell::new(Model::default()));
    for r in 0..3 {
        let room = admin
            .create_room(&format!("start {r}"), &ids[1..])
            .await
            .unwrap();
        let mut m = model.borrow_mut();
        m.rooms.push(room);
        m.members
            .insert(room, (ids.iter().copied().collect(), BTreeSet::new()));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    for cycle in 0..cycles {
        let mut tasks = Vec::new();
        for (me, _) in ids.iter().enumerate() {
            let c = if me == 0 {
                server.login("admin", &password).await
            } else {
                server
                    .login(&format!("user{me}"), &format!("password-of-{me}"))
                    .await
            };
            let seed = rng.gen();
            tasks.push(actix_rt::spawn(workload(c, me, ids, model.clone(), seed)));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..700))).await;
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let (sound, report) = run_check(&dir);
        assert!(
            sound,
            "cycle {cycle}: after kill -9 the folder is not sound:\n{report}"
        );
        server = TestServer::start_in(&dir, &[]);
        let mut clients = Vec::new();
        for me in 0..USERS {
            clients.push(if me == 0 {
                server.login("admin", &password).await
            } else {
                server
                    .login(&format!("user{me}"), &format!("password-of-{me}"))
                    .await
            });
        }
        verify(&mut clients, &model, cycle).await;
    }
    let m = model.borrow();
    assert!(
        m.acked > (cycles as u64) * 10,
        "the workload made progress: {} writes acknowledged",
        m.acked
    );
    eprintln!(
        "{cycles} kills: {} writes acknowledged, {} messages tracked",
        m.acked,
        m.messages.len()
    );
}
