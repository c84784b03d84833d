//! In-process presence: counts in memory, last-seen times written to the store.

use super::{Page, Presence, PresenceError, Scope, Status, Transition};
use crate::clock::unix_ms;
use crate::store::Store;
use crate::wire::UserRef;
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Connection counts per scope and user, with each scope's users ordered by username. The
/// in-process presence is this; the Redis presence keeps one as its node's own share.
#[derive(Debug, Default)]
pub struct Counts {
    inner: Mutex<CountsInner>,
}

#[derive(Debug, Default)]
struct CountsInner {
    counts: HashMap<(Scope, u64), usize>,
    lists: HashMap<Scope, BTreeSet<(String, u64)>>,
    /// Each scope's first page of users as last read, with the size it was read at: every
    /// join reads it (the joiner's `RoomPresence`), and in a busy scope most changes are past
    /// it (only the count changes), so it is built again only when a change falls inside it.
    first: HashMap<Scope, (usize, Arc<[UserRef]>)>,
}

impl Counts {
    fn lock(&self) -> MutexGuard<'_, CountsInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `user` in (`online`) or out of each scope; returns the transitions. Counting out
    /// a user who is not counted changes nothing.
    pub fn change(&self, user: &UserRef, scopes: &[Scope], online: bool) -> Vec<Transition> {
        let mut inner = self.lock();
        let mut transitions = Vec::new();
        for &scope in scopes {
            let key = (scope, user.id);
            let count = inner.counts.get(&key).copied().unwrap_or(0);
            let went = if online {
                inner.counts.insert(key, count + 1);
                count == 0
            } else if count > 1 {
                inner.counts.insert(key, count - 1);
                false
            } else {
                inner.counts.remove(&key).is_some()
            };
            if went {
                let inside = inner.first.get(&scope).is_some_and(|(limit, users)| {
                    users.len() < *limit
                        || users
                            .last()
                            .is_none_or(|last| (user.username.as_str(), user.id) <= (&*last.username, last.id))
                });
                if inside {
                    inner.first.remove(&scope);
                }
                let list = inner.lists.entry(scope).or_default();
                if online {
                    list.insert((user.username.clone(), user.id));
                } else {
                    list.remove(&(user.username.clone(), user.id));
                    if list.is_empty() {
                        inner.lists.remove(&scope);
                        inner.first.remove(&scope);
                    }
                }
                transitions.push(Transition { scope, user: user.clone(), online });
            }
        }
        transitions
    }

    /// Up to `limit` users of `scope` whose username sorts after `after`.
    pub fn page(&self, scope: Scope, after: Option<&str>, limit: usize) -> Page {
        let mut guard = self.lock();
        let CountsInner { lists, first, .. } = &mut *guard;
        let Some(list) = lists.get(&scope) else {
            return Page::default();
        };
        let online = list.len() as u64;
        if after.is_none()
            && let Some((read_at, users)) = first.get(&scope)
            && *read_at == limit
        {
            return Page { online, more: list.len() > limit, users: users.clone() };
        }
        let start = after.map_or(Bound::Unbounded, |name| Bound::Excluded((name.to_owned(), u64::MAX)));
        let mut users =
            list.range((start, Bound::Unbounded)).map(|(username, id)| UserRef { id: *id, username: username.clone() });
        let mut page = Vec::with_capacity(limit.min(list.len()));
        page.extend(users.by_ref().take(limit));
        let page: Arc<[UserRef]> = page.into();
        if after.is_none() {
            first.insert(scope, (limit, page.clone()));
        }
        Page { online, more: users.next().is_some(), users: page }
    }

    /// Whether the user has a connection counted.
    pub fn is_online(&self, id: u64) -> bool {
        self.lock().counts.contains_key(&(Scope::Online, id))
    }

    /// Every count: `(scope, user, connections)`.
    pub fn all(&self) -> Vec<(Scope, UserRef, usize)> {
        let inner = self.lock();
        let mut names = HashMap::new();
        for list in inner.lists.values() {
            for (username, id) in list {
                names.entry(*id).or_insert_with(|| username.clone());
            }
        }
        inner
            .counts
            .iter()
            .map(|(&(scope, id), &n)| (scope, UserRef { id, username: names.get(&id).cloned().unwrap_or_default() }, n))
            .collect()
    }
}

/// The single-node [`Presence`]: counts in memory; last-seen times are queued and written to
/// the store by the upkeep, once a second, so a disconnect never waits for a write.
pub struct LocalPresence {
    counts: Counts,
    store: Arc<dyn Store>,
    /// Last-seen times not yet written.
    unwritten: Mutex<HashMap<u64, u64>>,
}

impl LocalPresence {
    /// Presence whose last-seen times go to `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { counts: Counts::default(), store, unwritten: Mutex::new(HashMap::new()) }
    }

    fn unwritten(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.unwritten.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn write_seen(&self) -> Result<(), PresenceError> {
        let seen: Vec<(u64, u64)> = self.unwritten().iter().map(|(id, ms)| (*id, *ms)).collect();
        if seen.is_empty() {
            return Ok(());
        }
        self.store.record_seen(seen.clone()).await.map_err(|e| PresenceError(e.to_string()))?;
        let mut unwritten = self.unwritten();
        for (id, ms) in seen {
            if unwritten.get(&id) == Some(&ms) {
                unwritten.remove(&id);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn enter(&self, user: &UserRef, scopes: &[Scope]) -> Result<Vec<Transition>, PresenceError> {
        Ok(self.counts.change(user, scopes, true))
    }

    async fn exit(&self, user: &UserRef, scopes: &[Scope]) -> Result<Vec<Transition>, PresenceError> {
        let transitions = self.counts.change(user, scopes, false);
        if transitions.iter().any(|t| t.scope == Scope::Online) {
            self.unwritten().insert(user.id, unix_ms());
        }
        Ok(transitions)
    }

    async fn page(&self, scope: Scope, after: Option<&str>, limit: usize) -> Result<Page, PresenceError> {
        Ok(self.counts.page(scope, after, limit))
    }

    async fn status(&self, ids: &[u64]) -> Result<Vec<Status>, PresenceError> {
        let online: HashSet<u64> = ids.iter().copied().filter(|id| self.counts.is_online(*id)).collect();
        // Times not written yet are the newest; the store has the rest.
        let mut seen: HashMap<u64, u64> = {
            let unwritten = self.unwritten();
            ids.iter().filter_map(|id| unwritten.get(id).map(|ms| (*id, *ms))).collect()
        };
        let ask: Vec<u64> = ids.iter().copied().filter(|id| !online.contains(id) && !seen.contains_key(id)).collect();
        if !ask.is_empty() {
            seen.extend(self.store.last_seen(&ask).await.map_err(|e| PresenceError(e.to_string()))?);
        }
        Ok(ids
            .iter()
            .map(|&id| {
                let online = online.contains(&id);
                Status { id, online, last_seen_ms: if online { None } else { seen.get(&id).copied() } }
            })
            .collect())
    }

    fn upkeep_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn upkeep(&self) -> Result<Vec<Transition>, PresenceError> {
        self.write_seen().await?;
        Ok(Vec::new())
    }

    async fn leave(&self) -> Result<Vec<Transition>, PresenceError> {
        let now = unix_ms();
        for (scope, user, _) in self.counts.all() {
            if scope == Scope::Online {
                self.unwritten().insert(user.id, now);
            }
        }
        self.write_seen().await?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, name: &str) -> UserRef {
        UserRef { id, username: name.into() }
    }

    #[test]
    fn a_user_is_in_a_scope_until_the_last_connection_leaves_it() {
        let counts = Counts::default();
        let alice = user(1, "alice");
        let room = Scope::Room(7);
        let went = counts.change(&alice, &[Scope::Online, room], true);
        assert_eq!(went.len(), 2);
        assert!(counts.change(&alice, &[Scope::Online], true).is_empty(), "second tab");
        assert!(counts.change(&alice, &[Scope::Online], false).is_empty());
        assert!(counts.is_online(1));
        let went = counts.change(&alice, &[room, Scope::Online], false);
        assert_eq!(
            went,
            vec![
                Transition { scope: room, user: alice.clone(), online: false },
                Transition { scope: Scope::Online, user: alice.clone(), online: false },
            ]
        );
        assert!(!counts.is_online(1));
        assert!(counts.change(&alice, &[room], false).is_empty(), "an unknown exit changes nothing");
        assert_eq!(counts.page(room, None, 10), Page::default());
    }

    #[test]
    fn pages_follow_username_order_with_a_cursor() {
        let counts = Counts::default();
        for (id, name) in [(1, "carol"), (2, "Zoe"), (3, "alice"), (4, "bob")] {
            counts.change(&user(id, name), &[Scope::Room(1)], true);
        }
        let first = counts.page(Scope::Room(1), None, 2);
        assert_eq!(first.online, 4);
        assert!(first.more);
        assert_eq!(*first.users, [user(2, "Zoe"), user(3, "alice")], "bytewise: Z before a");
        let second = counts.page(Scope::Room(1), Some("alice"), 2);
        assert_eq!(*second.users, [user(4, "bob"), user(1, "carol")]);
        assert!(!second.more);
        assert!(counts.page(Scope::Room(1), Some("carol"), 2).users.is_empty());
    }

    #[test]
    fn the_first_page_follows_every_change_that_falls_inside_it() {
        let counts = Counts::default();
        let room = Scope::Room(1);
        let names = |page: &Page| page.users.iter().map(|u| u.username.clone()).collect::<Vec<_>>();
        for (id, name) in [(1, "bob"), (2, "dave")] {
            counts.change(&user(id, name), &[room], true);
        }
        assert_eq!(names(&counts.page(room, None, 2)), ["bob", "dave"]);
        counts.change(&user(3, "erin"), &[room], true);
        let page = counts.page(room, None, 2);
        assert_eq!((names(&page), page.online, page.more), (vec!["bob".to_owned(), "dave".into()], 3, true), "past it");
        counts.change(&user(4, "carol"), &[room], true);
        assert_eq!(names(&counts.page(room, None, 2)), ["bob", "carol"], "inside it");
        counts.change(&user(5, "carol"), &[room], true);
        assert_eq!(names(&counts.page(room, None, 2)), ["bob", "carol"], "the same name, a later id: past it");
        assert_eq!(counts.page(room, None, 2).users[1].id, 4);
        counts.change(&user(1, "bob"), &[room], false);
        let page = counts.page(room, None, 2);
        assert_eq!((page.users[0].id, page.users[1].id, page.online), (4, 5, 4), "a listed user left");
        assert_eq!(names(&counts.page(room, None, 3)), ["carol", "carol", "dave"], "another size is read anew");
        counts.change(&user(6, "zed"), &[room], true);
        assert_eq!(names(&counts.page(room, None, 3)), ["carol", "carol", "dave"]);
        for (id, name) in [(4, "carol"), (5, "carol"), (2, "dave"), (3, "erin"), (6, "zed")] {
            counts.change(&user(id, name), &[room], false);
        }
        assert_eq!(counts.page(room, None, 3), Page::default(), "nobody left");
        counts.change(&user(7, "amy"), &[room], true);
        assert_eq!(names(&counts.page(room, None, 3)), ["amy"]);
    }
}
