//! The store contract, as test functions every backend must pass (`run_all`).

use socketchat::store::*;

fn msg(room_id: u64, sender: &UserRecord, id: u8, text: &str) -> NewMessage {
    NewMessage::post(
        room_id,
        &socketchat::wire::UserRef { id: sender.id, username: sender.username.clone() },
        [id; 16],
        text.to_owned(),
    )
}

/// Runs every contract test against `store` (which must be freshly migrated).
pub async fn run_all(store: &dyn Store) {
    seeded_rooms(store).await;
    let (alice, bob) = users(store).await;
    append_assigns_gap_free_seqs_and_dedupes(store, &alice, &bob).await;
    paging_and_ranges(store, &alice).await;
    a_batch_with_an_unknown_room_stores_nothing(store, &alice).await;
    revocation(store).await;
    channels_members_and_read_marks(store, &alice, &bob).await;
    edits_deletes_and_attachments(store, &alice, &bob).await;
    names_and_ids_no_row_can_have(store, &alice).await;
}

/// Lookups by a name with U+0000 (PostgreSQL's text cannot hold it) or an id past `i64::MAX`
/// (SQLite's integers end there) find nothing, like any other unknown name or id: clients send
/// both (a URL's `%00`, a presence query's ids), and a failed statement would answer 503.
async fn names_and_ids_no_row_can_have(store: &dyn Store, alice: &UserRecord) {
    assert!(store.room_by_name("gen\0eral").await.unwrap().is_none());
    assert!(store.user_by_name(&format!("{}\0", alice.username)).await.unwrap().is_none());
    assert!(store.user_by_email(&format!("{}\0", alice.email)).await.unwrap().is_none());
    assert!(store.upload(u64::MAX).await.unwrap().is_none());
    assert!(store.upload(1 << 63).await.unwrap().is_none());
    assert_eq!(store.last_seen(&[u64::MAX, 1 << 63]).await.unwrap(), []);
    let room = store.rooms().await.unwrap()[0].id;
    let head = store.head_seq(room).await.unwrap();
    assert_eq!(store.mark_read(alice.id, room, u64::MAX).await.unwrap(), head, "read up to the head");
}

async fn edits_deletes_and_attachments(store: &dyn Store, alice: &UserRecord, bob: &UserRecord) {
    let room = store.rooms().await.unwrap()[3].id; // support
    let head = store.head_seq(room).await.unwrap();
    assert_eq!(store.mark_read(bob.id, room, head).await.unwrap(), head, "what came before is read");
    let change = |sender: &UserRecord, id: u8, kind: MessageKind, target: u64, text: &str| {
        let mut m = msg(room, sender, id, text);
        m.kind = kind;
        m.target_seq = Some(target);
        m
    };
    let posted = store.append(vec![msg(room, alice, 200, "first"), msg(room, bob, 200, "bob's")]).await.unwrap();
    let (mine, theirs) = (posted[0].message.seq, posted[1].message.seq);
    assert_eq!((mine, theirs), (head + 1, head + 2));

    // Refusals: nothing stored, no seq taken.
    for (bad, why) in [
        (change(alice, 201, MessageKind::Edit, theirs, "mine now"), "someone else's"),
        (change(alice, 202, MessageKind::Delete, theirs, ""), "someone else's"),
        (change(alice, 203, MessageKind::Edit, 9_999, "x"), "no such seq"),
    ] {
        assert!(matches!(store.append_checked(bad).await, Err(StoreError::Rejected(_))), "{why}");
    }
    assert_eq!(store.head_seq(room).await.unwrap(), theirs);

    // An edit is an event with its own seq, and changes the message.
    let edit = store.append_checked(change(alice, 204, MessageKind::Edit, mine, "first, edited")).await.unwrap();
    assert!(!edit.duplicate);
    assert_eq!(
        (edit.message.seq, edit.message.kind, edit.message.target_seq),
        (theirs + 1, MessageKind::Edit, Some(mine))
    );
    let again = store.append_checked(change(alice, 204, MessageKind::Edit, mine, "first, edited")).await.unwrap();
    assert!(again.duplicate, "a retried edit is stored once");
    assert_eq!(again.message.seq, edit.message.seq);
    assert!(
        matches!(
            store.append_checked(change(alice, 205, MessageKind::Edit, edit.message.seq, "x")).await,
            Err(StoreError::Rejected(_))
        ),
        "an edit event is not a message"
    );
    let rows = store.range(room, mine, edit.message.seq).await.unwrap();
    assert_eq!(rows[0].text, "first, edited");
    assert_eq!(rows[0].edited_at_ms, Some(edit.message.sent_at_ms));
    assert_eq!((rows[2].kind, rows[2].text.as_str()), (MessageKind::Edit, "first, edited"));

    // Attachments: the sender's own uploads, each once.
    let file = store.create_upload(alice.id, "cat.png", "image/png", b"\x89PNG\r\n\x1a\nabc").await.unwrap();
    assert_eq!((file.attachment.size, file.room_id), (11, None));
    let (meta, data) = store.upload(file.attachment.id).await.unwrap().unwrap();
    assert_eq!((meta.owner_id, data.len()), (alice.id, 11));
    let with_file = |sender: &UserRecord, id: u8| {
        let mut m = msg(room, sender, id, "");
        m.attachments = vec![file.attachment.id];
        m
    };
    assert!(matches!(store.append_checked(with_file(bob, 210)).await, Err(StoreError::Rejected(_))), "not bob's");
    let shared = store.append_checked(with_file(alice, 211)).await.unwrap();
    assert_eq!(shared.message.attachments, std::slice::from_ref(&file.attachment));
    assert_eq!(store.upload(file.attachment.id).await.unwrap().unwrap().0.room_id, Some(room));
    assert!(matches!(store.append_checked(with_file(alice, 212)).await, Err(StoreError::Rejected(_))), "once");
    let page = store.page_before(room, None, 1).await.unwrap();
    assert_eq!(page[0].attachments, std::slice::from_ref(&file.attachment), "read back with the message");

    // A deletion empties the message, drops its files, and is final.
    let delete = change(alice, 213, MessageKind::Delete, shared.message.seq, "");
    let deleted = store.append_checked(delete).await.unwrap();
    assert_eq!(deleted.message.kind, MessageKind::Delete);
    let row = &store.range(room, shared.message.seq, shared.message.seq).await.unwrap()[0];
    assert!(row.deleted && row.text.is_empty() && row.attachments.is_empty(), "{row:?}");
    assert!(store.upload(file.attachment.id).await.unwrap().is_none(), "the file goes with it");
    let edit_deleted = change(alice, 214, MessageKind::Edit, shared.message.seq, "back");
    assert!(matches!(store.append_checked(edit_deleted).await, Err(StoreError::Rejected(_))));
    // Edits, deletions and deleted messages are not unread.
    let unread = store.rooms_for(bob.id).await.unwrap().into_iter().find(|l| l.room.id == room).unwrap();
    assert_eq!(unread.unread, 1, "only alice's first message counts for bob: {unread:?}");

    // Deleting an edited post empties its edits too (their text was the post's); the edits of
    // other posts keep theirs.
    let bobs_edit = store.append_checked(change(bob, 215, MessageKind::Edit, theirs, "bob's, edited")).await.unwrap();
    store.append_checked(change(alice, 216, MessageKind::Delete, mine, "")).await.unwrap();
    let head = store.head_seq(room).await.unwrap();
    let texts: Vec<(u64, String)> =
        store.range(room, mine, head).await.unwrap().into_iter().map(|m| (m.seq, m.text)).collect();
    let text_at = |seq: u64| texts.iter().find(|(s, _)| *s == seq).map(|(_, t)| t.as_str());
    assert_eq!(text_at(mine), Some(""), "{texts:?}");
    assert_eq!(text_at(edit.message.seq), Some(""), "the deleted post's edit: {texts:?}");
    assert_eq!(text_at(bobs_edit.message.seq), Some("bob's, edited"), "{texts:?}");
}

async fn channels_members_and_read_marks(store: &dyn Store, alice: &UserRecord, bob: &UserRecord) {
    let carol = store.create_user("carol", "carol@example.com", "hash-c").await.unwrap();
    assert_eq!(store.user_by_name("CAROL").await.unwrap().unwrap().id, carol.id, "usernames are case-insensitive");
    assert!(store.user_by_name("nobody").await.unwrap().is_none());

    let new = |name: &str, kind: RoomKind, owner: Option<u64>, members: Vec<u64>| NewRoom {
        name: name.into(),
        topic: format!("about {name}"),
        kind,
        owner,
        members,
    };
    let secret = store.create_room(new("secret", RoomKind::Private, Some(alice.id), vec![])).await.unwrap();
    assert_eq!((secret.name.as_str(), secret.kind), ("secret", RoomKind::Private));
    assert!(matches!(
        store.create_room(new("secret", RoomKind::Public, Some(bob.id), vec![])).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(store.create_room(new("general", RoomKind::Public, None, vec![])).await, Err(StoreError::Conflict(_))),
        "seeded names are taken too"
    );
    let open = store.create_room(new("open", RoomKind::Public, Some(bob.id), vec![])).await.unwrap();
    let dm = store.create_room(new("@1-2", RoomKind::Direct, None, vec![alice.id, bob.id])).await.unwrap();
    assert_eq!(store.room_by_name("secret").await.unwrap().unwrap(), secret);
    assert!(store.room_by_name("nope").await.unwrap().is_none());
    let public: Vec<String> = store.rooms().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(public, ["general", "engineering", "design", "support", "open"], "only public rooms");

    // Roles and membership changes.
    assert_eq!(store.role(secret.id, alice.id).await.unwrap(), Some(Role::Owner));
    assert_eq!(store.role(secret.id, bob.id).await.unwrap(), None);
    assert!(store.add_member(secret.id, bob.id).await.unwrap());
    assert!(!store.add_member(secret.id, bob.id).await.unwrap(), "already a member");
    assert_eq!(store.role(secret.id, bob.id).await.unwrap(), Some(Role::Member));
    let members: Vec<(String, Role)> =
        store.members(secret.id).await.unwrap().into_iter().map(|(_, name, role)| (name, role)).collect();
    assert_eq!(members, [("alice".to_owned(), Role::Owner), ("bob".to_owned(), Role::Member)]);
    assert!(store.remove_member(secret.id, bob.id).await.unwrap());
    assert!(!store.remove_member(secret.id, bob.id).await.unwrap());
    assert_eq!(store.role(secret.id, bob.id).await.unwrap(), None);
    assert!(store.add_member(secret.id, 999_999).await.is_err(), "no such user");

    // Each user sees the public rooms and their own closed ones.
    let seen = |listings: Vec<RoomListing>| -> Vec<String> { listings.into_iter().map(|l| l.room.name).collect() };
    let all_public = ["general", "engineering", "design", "support"];
    let alice_sees = seen(store.rooms_for(alice.id).await.unwrap());
    assert_eq!(alice_sees, [&all_public[..], &["secret", "open", "@1-2"]].concat());
    let bob_sees = seen(store.rooms_for(bob.id).await.unwrap());
    assert_eq!(bob_sees, [&all_public[..], &["open", "@1-2"]].concat());
    let carol_sees = seen(store.rooms_for(carol.id).await.unwrap());
    assert_eq!(carol_sees, [&all_public[..], &["open"]].concat());

    // Unread: others' messages above the read mark; the mark only moves up, never past the head.
    let sends: Vec<NewMessage> = (0..5).map(|i| msg(dm.id, if i < 3 { bob } else { alice }, 100 + i, "dm")).collect();
    store.append(sends).await.unwrap();
    let listing = |l: Vec<RoomListing>| l.into_iter().find(|l| l.room.id == dm.id).unwrap();
    let a = listing(store.rooms_for(alice.id).await.unwrap());
    assert_eq!((a.head_seq, a.last_read_seq, a.unread, a.role), (5, 0, 3, Some(Role::Member)));
    assert_eq!(store.mark_read(alice.id, dm.id, 2).await.unwrap(), 2);
    assert_eq!(store.mark_read(alice.id, dm.id, 1).await.unwrap(), 2, "never down");
    assert_eq!(listing(store.rooms_for(alice.id).await.unwrap()).unread, 1);
    assert_eq!(store.mark_read(alice.id, dm.id, u64::MAX).await.unwrap(), 5, "never past the head");
    assert_eq!(listing(store.rooms_for(alice.id).await.unwrap()).unread, 0);
    let b = listing(store.rooms_for(bob.id).await.unwrap());
    assert_eq!((b.last_read_seq, b.unread), (0, 2), "bob's own messages are not unread to him");
    assert_eq!(store.mark_read(carol.id, 999_999, 3).await.unwrap(), 0, "no such room: no mark");

    // Unread counts stop at the cap.
    let many: Vec<NewMessage> =
        (0..(UNREAD_CAP + 5)).map(|i| msg(open.id, bob, (i % 200) as u8, &format!("m{i}"))).collect();
    let many: Vec<NewMessage> = many
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.client_msg_id[1] = (i / 200) as u8 + 1;
            m
        })
        .collect();
    store.append(many).await.unwrap();
    let o = store.rooms_for(carol.id).await.unwrap().into_iter().find(|l| l.room.id == open.id).unwrap();
    assert_eq!((o.head_seq, o.unread), (UNREAD_CAP + 5, UNREAD_CAP));
}

async fn seeded_rooms(store: &dyn Store) {
    store.ping().await.unwrap();
    let names: Vec<String> = store.rooms().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["general", "engineering", "design", "support"]);
}

async fn users(store: &dyn Store) -> (UserRecord, UserRecord) {
    let alice = store.create_user("alice", "alice@example.com", "hash-a").await.unwrap();
    let bob = store.create_user("bob", "bob@example.com", "hash-b").await.unwrap();
    assert_ne!(alice.id, bob.id);
    assert!(matches!(store.create_user("ALICE", "x@example.com", "h").await, Err(StoreError::Conflict("username"))));
    assert!(matches!(store.create_user("carol", "Alice@Example.com", "h").await, Err(StoreError::Conflict("email"))));
    let found = store.user_by_email("ALICE@example.com").await.unwrap().unwrap();
    assert_eq!((found.id, found.password_hash.as_str()), (alice.id, "hash-a"));
    assert_eq!(store.user_by_id(bob.id).await.unwrap().unwrap().username, "bob");
    assert!(store.user_by_email("nobody@example.com").await.unwrap().is_none());
    (alice, bob)
}

async fn append_assigns_gap_free_seqs_and_dedupes(store: &dyn Store, alice: &UserRecord, bob: &UserRecord) {
    let rooms = store.rooms().await.unwrap();
    let (general, design) = (rooms[0].id, rooms[2].id);
    assert_eq!(store.head_seq(general).await.unwrap(), 0);
    let out = store
        .append(vec![
            msg(general, alice, 1, "one"),
            msg(design, alice, 1, "elsewhere"),
            msg(general, bob, 1, "same id, other sender"),
            msg(general, alice, 1, "retry inside the batch"),
        ])
        .await
        .unwrap();
    let seqs: Vec<(u64, bool)> = out.iter().map(|a| (a.message.seq, a.duplicate)).collect();
    assert_eq!(seqs, [(1, false), (1, false), (2, false), (1, true)]);
    assert_eq!(out[3].message, out[0].message, "a duplicate returns the original row");
    assert_eq!(out[3].message.text, "one");

    let retry = store.append(vec![msg(general, alice, 1, "later retry"), msg(general, alice, 2, "two")]).await.unwrap();
    assert!(retry[0].duplicate);
    assert_eq!(retry[0].message, out[0].message, "identical ack data for a later retry");
    assert_eq!(retry[1].message.seq, 3, "a duplicate consumes no seq");
    assert_eq!(store.head_seq(general).await.unwrap(), 3);
    let all = store.range(general, 1, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[1].sender_name, "bob");
}

async fn paging_and_ranges(store: &dyn Store, alice: &UserRecord) {
    let room = store.rooms().await.unwrap()[3].id;
    let batch = (0..25).map(|i| msg(room, alice, 100 + i, &format!("m{}", i + 1))).collect();
    store.append(batch).await.unwrap();
    let newest = store.page_before(room, None, 10).await.unwrap();
    assert_eq!(newest.iter().map(|m| m.seq).collect::<Vec<_>>(), (16..=25).collect::<Vec<_>>());
    let older = store.page_before(room, Some(16), 10).await.unwrap();
    assert_eq!(older.first().unwrap().seq, 6);
    assert_eq!(older.last().unwrap().text, "m15");
    let oldest = store.page_before(room, Some(6), 10).await.unwrap();
    assert_eq!(oldest.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(store.page_before(room, Some(1), 10).await.unwrap().is_empty());
    let middle = store.range(room, 10, 12).await.unwrap();
    assert_eq!(middle.iter().map(|m| m.seq).collect::<Vec<_>>(), [10, 11, 12]);
}

async fn revocation(store: &dyn Store) {
    assert!(!store.is_revoked("jti-1").await.unwrap());
    store.revoke_token("jti-1", u64::from(u32::MAX)).await.unwrap();
    store.revoke_token("jti-1", u64::from(u32::MAX)).await.unwrap();
    assert!(store.is_revoked("jti-1").await.unwrap());
    assert!(!store.is_revoked("jti-2").await.unwrap());
}

async fn a_batch_with_an_unknown_room_stores_nothing(store: &dyn Store, alice: &UserRecord) {
    let general = store.rooms().await.unwrap()[0].id;
    let head = store.head_seq(general).await.unwrap();
    let result =
        store.append(vec![msg(general, alice, 200, "would be fine"), msg(999_999, alice, 201, "no such room")]).await;
    assert!(result.is_err(), "an unknown room fails the batch");
    assert_eq!(store.head_seq(general).await.unwrap(), head, "all or nothing: no seq consumed");
    assert_eq!(store.range(general, head + 1, head + 10).await.unwrap(), vec![]);
}
