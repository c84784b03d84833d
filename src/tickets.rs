//! Single-use WebTransport tickets: browsers send no cookies with WebTransport, so a
//! cookie-authenticated `POST /api/auth/ticket` hands out a ticket that lives 30 s, works once,
//! and is bound to the user's token and to the Origin that asked for it. Embedded default:
//! in memory; in a cluster they live in Redis (`SET … PX`, redeemed with `GETDEL`, which is
//! atomic), so a ticket bought on one node works once on any node.

use crate::redis_client::RedisClient;
use crate::wire::UserRef;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a ticket may wait to be used, by default.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets per node before new ones are refused (G6).
const MAX_OUTSTANDING: usize = 10_000;

/// What a ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The user.
    pub user: UserRef,
    /// The token the ticket was bought with (its revocation or expiry ends the session).
    pub token_id: String,
    /// That token's expiry, Unix seconds.
    pub token_expires_at: u64,
    /// The Origin that asked for the ticket (must match the CONNECT's).
    pub origin: Option<String>,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Unknown, used, or expired.
    #[error("unknown, used or expired ticket")]
    Invalid,
    /// Presented from another origin than the one it was issued to.
    #[error("ticket presented from another origin")]
    WrongOrigin,
    /// Too many outstanding tickets.
    #[error("too many outstanding tickets")]
    Full,
    /// Redis did not answer.
    #[error("ticket store unavailable")]
    Unavailable,
}

/// The node's tickets.
pub struct Tickets {
    outstanding: Mutex<HashMap<String, (Grant, Instant)>>,
    ttl: Duration,
    redis: Option<RedisClient>,
}

fn redis_key(ticket: &str) -> String {
    format!("socketchat:ticket:{ticket}")
}

impl Default for Tickets {
    fn default() -> Self {
        Self::new(TICKET_TTL)
    }
}

impl Tickets {
    /// Tickets that live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { outstanding: Mutex::new(HashMap::new()), ttl, redis: None }
    }

    /// Tickets kept in Redis, redeemable on every node.
    pub fn shared(ttl: Duration, redis: RedisClient) -> Self {
        Self { outstanding: Mutex::new(HashMap::new()), ttl, redis: Some(redis) }
    }

    /// How long a ticket lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a ticket for `grant`, valid for the ttl.
    pub async fn issue(&self, grant: Grant, now: Instant) -> Result<String, TicketError> {
        let Some(redis) = &self.redis else {
            return self.issue_local(grant, now);
        };
        let ticket = hex::encode(rand::random::<[u8; 24]>());
        let value = serde_json::to_string(&grant).map_err(|_| TicketError::Unavailable)?;
        let set = redis::cmd("SET")
            .arg(redis_key(&ticket))
            .arg(value)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async::<()>(&mut redis.clone())
            .await;
        set.map_err(|e| {
            tracing::warn!(error = %e, "ticket not stored");
            TicketError::Unavailable
        })?;
        Ok(ticket)
    }

    /// Redeems a ticket once: removed whatever the outcome, so a replay always fails.
    pub async fn redeem(&self, ticket: &str, origin: Option<&str>, now: Instant) -> Result<Grant, TicketError> {
        let Some(redis) = &self.redis else {
            return self.redeem_local(ticket, origin, now);
        };
        if ticket.len() != 48 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TicketError::Invalid);
        }
        let taken: Option<String> =
            redis::cmd("GETDEL").arg(redis_key(ticket)).query_async(&mut redis.clone()).await.map_err(|e| {
                tracing::warn!(error = %e, "ticket store unavailable");
                TicketError::Unavailable
            })?;
        let grant: Grant =
            serde_json::from_str(&taken.ok_or(TicketError::Invalid)?).map_err(|_| TicketError::Invalid)?;
        same_origin(grant, origin)
    }

    fn issue_local(&self, grant: Grant, now: Instant) -> Result<String, TicketError> {
        let mut map = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_OUTSTANDING {
            return Err(TicketError::Full);
        }
        let ticket = hex::encode(rand::random::<[u8; 24]>());
        map.insert(ticket.clone(), (grant, now + self.ttl));
        Ok(ticket)
    }

    fn redeem_local(&self, ticket: &str, origin: Option<&str>, now: Instant) -> Result<Grant, TicketError> {
        let taken = self.outstanding.lock().unwrap_or_else(|p| p.into_inner()).remove(ticket);
        let (grant, expires) = taken.ok_or(TicketError::Invalid)?;
        if now >= expires {
            return Err(TicketError::Invalid);
        }
        same_origin(grant, origin)
    }
}

/// A ticket works only from the Origin that bought it: one bought without an `Origin` (a
/// native client) is refused from a browser, which always sends one (PROTOCOL.md § 1.4).
fn same_origin(grant: Grant, origin: Option<&str>) -> Result<Grant, TicketError> {
    if grant.origin.as_deref() == origin { Ok(grant) } else { Err(TicketError::WrongOrigin) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(origin: Option<&str>) -> Grant {
        Grant {
            user: UserRef { id: 1, username: "alice".into() },
            token_id: "jti".into(),
            token_expires_at: u64::MAX,
            origin: origin.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn a_ticket_works_once_within_its_lifetime_and_origin() {
        let t = Tickets::default();
        let now = Instant::now();
        let ticket = t.issue(grant(Some("http://a")), now).await.unwrap();
        assert_eq!(t.redeem(&ticket, Some("http://a"), now).await.unwrap(), grant(Some("http://a")));
        assert_eq!(t.redeem(&ticket, Some("http://a"), now).await, Err(TicketError::Invalid), "single use");

        let late = t.issue(grant(None), now).await.unwrap();
        assert_eq!(t.redeem(&late, None, now + TICKET_TTL).await, Err(TicketError::Invalid), "expired");

        let elsewhere = t.issue(grant(Some("http://a")), now).await.unwrap();
        assert_eq!(t.redeem(&elsewhere, Some("http://evil"), now).await, Err(TicketError::WrongOrigin));
        assert_eq!(
            t.redeem(&elsewhere, Some("http://a"), now).await,
            Err(TicketError::Invalid),
            "burnt by the attempt"
        );
        assert_eq!(t.redeem("made-up", None, now).await, Err(TicketError::Invalid));

        let native = t.issue(grant(None), now).await.unwrap();
        assert_eq!(
            t.redeem(&native, Some("http://a"), now).await,
            Err(TicketError::WrongOrigin),
            "bought without an Origin: not from a browser"
        );
        let browser = t.issue(grant(Some("http://a")), now).await.unwrap();
        assert_eq!(t.redeem(&browser, None, now).await, Err(TicketError::WrongOrigin), "nor the other way round");
        let native = t.issue(grant(None), now).await.unwrap();
        assert_eq!(t.redeem(&native, None, now).await.unwrap(), grant(None));
    }
}
