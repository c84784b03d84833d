//! In-process presence: a map of user → open connections.

use super::{Presence, PresenceError};
use crate::wire::{PresenceEvent, UserRef};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// The single-node [`Presence`].
#[derive(Default)]
pub struct LocalPresence {
    counts: Mutex<HashMap<u64, (UserRef, usize)>>,
}

impl LocalPresence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (UserRef, usize)>> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a connection in; `true` when it is the user's first.
    pub(crate) fn add(&self, user: &UserRef) -> bool {
        let mut counts = self.lock();
        let entry = counts.entry(user.id).or_insert_with(|| (user.clone(), 0));
        entry.1 += 1;
        entry.1 == 1
    }

    /// Counts a connection out; `true` when it was the user's last (an unknown one is ignored).
    pub(crate) fn remove(&self, user: &UserRef) -> bool {
        let mut counts = self.lock();
        let Some(entry) = counts.get_mut(&user.id) else {
            return false;
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            counts.remove(&user.id);
            return true;
        }
        false
    }

    /// Every user counted, with the number of connections.
    pub(crate) fn counts(&self) -> Vec<(UserRef, usize)> {
        self.lock().values().cloned().collect()
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn connect(&self, user: &UserRef) -> Result<Vec<PresenceEvent>, PresenceError> {
        Ok(self.add(user).then(|| PresenceEvent { user: user.clone(), online: true }).into_iter().collect())
    }

    async fn disconnect(&self, user: &UserRef) -> Result<Vec<PresenceEvent>, PresenceError> {
        Ok(self.remove(user).then(|| PresenceEvent { user: user.clone(), online: false }).into_iter().collect())
    }

    async fn online(&self) -> Result<Vec<UserRef>, PresenceError> {
        let mut users: Vec<UserRef> = self.lock().values().map(|(u, _)| u.clone()).collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn online_until_the_last_connection_closes() {
        let p = LocalPresence::default();
        let alice = UserRef { id: 1, username: "alice".into() };
        let online = vec![PresenceEvent { user: alice.clone(), online: true }];
        let offline = vec![PresenceEvent { user: alice.clone(), online: false }];
        assert_eq!(p.connect(&alice).await.unwrap(), online);
        assert!(p.connect(&alice).await.unwrap().is_empty());
        assert_eq!(p.online().await.unwrap(), vec![alice.clone()]);
        assert!(p.disconnect(&alice).await.unwrap().is_empty());
        assert_eq!(p.disconnect(&alice).await.unwrap(), offline);
        assert!(p.online().await.unwrap().is_empty());
        assert!(p.disconnect(&alice).await.unwrap().is_empty(), "an unknown disconnect is ignored");
    }
}
