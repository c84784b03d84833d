//! The store contract, as test functions every backend must pass (`run_all`).

use socketchat::store::*;

fn msg(room_id: u64, sender: &UserRecord, id: u8, text: &str) -> NewMessage {
    NewMessage {
        room_id,
        sender_id: sender.id,
        sender_name: sender.username.clone(),
        client_msg_id: [id; 16],
        text: text.to_owned(),
    }
}

/// Runs every contract test against `store` (which must be freshly migrated).
pub async fn run_all(store: &dyn Store) {
    seeded_rooms(store).await;
    let (alice, bob) = users(store).await;
    append_assigns_gap_free_seqs_and_dedupes(store, &alice, &bob).await;
    paging_and_ranges(store, &alice).await;
    a_batch_with_an_unknown_room_stores_nothing(store, &alice).await;
    revocation(store).await;
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
