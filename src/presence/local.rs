//! In-process presence: a map of user → open connections.

use super::{Presence, PresenceError};
use crate::wire::UserRef;
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
}

#[async_trait]
impl Presence for LocalPresence {
    async fn connect(&self, user: &UserRef) -> Result<bool, PresenceError> {
        let mut counts = self.lock();
        let entry = counts.entry(user.id).or_insert_with(|| (user.clone(), 0));
        entry.1 += 1;
        Ok(entry.1 == 1)
    }

    async fn disconnect(&self, user: &UserRef) -> Result<bool, PresenceError> {
        let mut counts = self.lock();
        let Some(entry) = counts.get_mut(&user.id) else {
            return Ok(false);
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            counts.remove(&user.id);
            return Ok(true);
        }
        Ok(false)
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
        assert!(p.connect(&alice).await.unwrap());
        assert!(!p.connect(&alice).await.unwrap());
        assert_eq!(p.online().await.unwrap(), vec![alice.clone()]);
        assert!(!p.disconnect(&alice).await.unwrap());
        assert!(p.disconnect(&alice).await.unwrap());
        assert!(p.online().await.unwrap().is_empty());
        assert!(!p.disconnect(&alice).await.unwrap(), "an unknown disconnect is ignored");
    }
}
