//! Single-use WebTransport tickets: browsers send no cookies with WebTransport, so a
//! cookie-authenticated `POST /api/auth/ticket` hands out a ticket that lives 30 s, works once,
//! and is bound to the user's token and to the Origin that asked for it. Embedded default:
//! in memory (a cluster keeps them where every node can redeem them).

use crate::wire::UserRef;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a ticket may wait to be used, by default.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets per node before new ones are refused (G6).
const MAX_OUTSTANDING: usize = 10_000;

/// What a ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// The node's tickets.
#[derive(Debug)]
pub struct Tickets {
    outstanding: Mutex<HashMap<String, (Grant, Instant)>>,
    ttl: Duration,
}

impl Default for Tickets {
    fn default() -> Self {
        Self::new(TICKET_TTL)
    }
}

impl Tickets {
    /// Tickets that live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { outstanding: Mutex::new(HashMap::new()), ttl }
    }

    /// How long a ticket lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a ticket for `grant`, valid until `now + ttl`.
    pub fn issue(&self, grant: Grant, now: Instant) -> Result<String, TicketError> {
        let mut map = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_OUTSTANDING {
            return Err(TicketError::Full);
        }
        let ticket = hex::encode(rand::random::<[u8; 24]>());
        map.insert(ticket.clone(), (grant, now + self.ttl));
        Ok(ticket)
    }

    /// Redeems a ticket once: removed whatever the outcome, so a replay always fails.
    pub fn redeem(&self, ticket: &str, origin: Option<&str>, now: Instant) -> Result<Grant, TicketError> {
        let taken = self.outstanding.lock().unwrap_or_else(|p| p.into_inner()).remove(ticket);
        let (grant, expires) = taken.ok_or(TicketError::Invalid)?;
        if now >= expires {
            return Err(TicketError::Invalid);
        }
        if grant.origin.is_some() && grant.origin.as_deref() != origin {
            return Err(TicketError::WrongOrigin);
        }
        Ok(grant)
    }
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

    #[test]
    fn a_ticket_works_once_within_its_lifetime_and_origin() {
        let t = Tickets::default();
        let now = Instant::now();
        let ticket = t.issue(grant(Some("http://a")), now).unwrap();
        assert_eq!(t.redeem(&ticket, Some("http://a"), now).unwrap(), grant(Some("http://a")));
        assert_eq!(t.redeem(&ticket, Some("http://a"), now), Err(TicketError::Invalid), "single use");

        let late = t.issue(grant(None), now).unwrap();
        assert_eq!(t.redeem(&late, None, now + TICKET_TTL), Err(TicketError::Invalid), "expired");

        let elsewhere = t.issue(grant(Some("http://a")), now).unwrap();
        assert_eq!(t.redeem(&elsewhere, Some("http://evil"), now), Err(TicketError::WrongOrigin));
        assert_eq!(t.redeem(&elsewhere, Some("http://a"), now), Err(TicketError::Invalid), "burnt by the attempt");
        assert_eq!(t.redeem("made-up", None, now), Err(TicketError::Invalid));
    }
}
