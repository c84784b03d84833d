//! Tokens, passwords, cookies and origins: everything that decides who gets in (G7).
//! Pure except for password hashing, which callers run on the blocking pool.

use crate::clock::unix_secs;
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Name of the cookie that carries the JWT.
pub const COOKIE_NAME: &str = "token";

/// What a token says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id, as a decimal string (JWT convention).
    pub sub: String,
    /// Username at issue time.
    pub name: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Unique token id, the key for revocation.
    pub jti: String,
}

impl Claims {
    /// The user id in `sub`.
    pub fn user_id(&self) -> Option<u64> {
        self.sub.parse().ok()
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// Bad signature, wrong algorithm, malformed, or expired.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Tokens kept with their claims once checked (see [`TokenKeys::verify`]): ~0.5 MB at most.
const VERIFIED_KEPT: usize = 1024;

/// Issues and verifies HS256 tokens with the node's shared secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
    /// Tokens whose signature and algorithm were checked, with their claims.
    verified: Mutex<HashMap<String, Claims>>,
}

impl TokenKeys {
    /// Keys from a secret; tokens live `ttl_secs`.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // HS256 only: `Validation::new` accepts exactly this algorithm, so `none`, RS256-with-
        // our-secret-as-public-key and friends are refused. `exp` is required and checked
        // without leeway.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // Expired at `exp` itself (not one second later), like the connection deadline.
        validation.reject_tokens_expiring_in_less_than = 1;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh token for a user, valid from `now` (Unix seconds).
    pub fn issue(&self, user_id: u64, username: &str, now: u64) -> (String, Claims) {
        let claims = Claims {
            sub: user_id.to_string(),
            name: username.to_owned(),
            iat: now,
            exp: now + self.ttl_secs,
            jti: hex::encode(rand::random::<[u8; 16]>()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default();
        (token, claims)
    }

    /// Checks signature, algorithm and expiry.
    ///
    /// A session presents the same token at every upgrade and request (each tab, each
    /// reconnect), and checking it again cost about 5 % of a connect's CPU. The signature and
    /// algorithm of a string are checked once, then the token is kept with its claims: only
    /// its expiry, which changes with time, is checked at each use. Revocation is the caller's
    /// check, at each use too. At most `VERIFIED_KEPT` are kept.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Some(claims) = self.kept().get(token)
            && claims.exp > unix_secs()
        {
            return Ok(claims.clone());
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        data.claims.user_id().ok_or_else(|| AuthError::Invalid("sub is not a user id".into()))?;
        let mut kept = self.kept();
        if kept.len() >= VERIFIED_KEPT {
            // One goes to make room, whichever the map yields first (its order is seeded at
            // random): the tokens in use stay kept, where dropping them all would check every
            // one of them again.
            if let Some(any) = kept.keys().next().cloned() {
                kept.remove(&any);
            }
        }
        kept.insert(token.to_owned(), data.claims.clone());
        Ok(data.claims)
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<String, Claims>> {
        self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }
}

/// Hashes a password with argon2id and a random salt (slow on purpose: call off the runtime).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks a password against a stored PHC string; any malformed hash counts as a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// The `token` cookie's value among all `Cookie` header values.
pub fn token_from_cookies<'a>(cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    cookie_headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` value that stores a token; `Secure` when the client reached us over HTTPS (a
/// browser then never sends it over plain HTTP).
pub fn session_cookie(token: &str, max_age_secs: u64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{secure}")
}

/// `Set-Cookie` value that deletes the token.
pub fn clearing_cookie(https: bool) -> String {
    session_cookie("", 0, https)
}

/// Whether a WebSocket upgrade's `Origin` may connect: absent (a native client), the server's
/// own origin (same host as the `Host` header), or explicitly allowed. Comparison ignores case.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    // Compared exactly as browsers serialize an origin (RFC 6454: no path, no trailing slash);
    // configured origins may be written with one.
    if allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = host else { return false };
    ["http://", "https://"].iter().any(|scheme| {
        origin.len() == scheme.len() + host.len()
            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
            && origin[scheme.len()..].eq_ignore_ascii_case(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef", 3600)
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn issued_token_verifies_with_its_claims() {
        let (token, claims) = keys().issue(7, "alice", now());
        let got = keys().verify(&token).unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.user_id(), Some(7));
    }

    #[test]
    fn expired_tampered_foreign_and_unsigned_tokens_are_refused() {
        let (expired, _) = keys().issue(7, "alice", NOW - 10_000_000);
        assert!(keys().verify(&expired).is_err(), "expired");
        let keys = keys();
        let (token, _) = keys.issue(7, "alice", now());
        // Kept as checked; the forgeries below are refused all the same.
        keys.verify(&token).unwrap();
        let other = TokenKeys::new(b"another secret, another server!!", 3600);
        assert!(other.verify(&token).is_err(), "foreign signature");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        assert!(keys.verify(&parts.join(".")).is_err(), "tampered signature");
        // alg=none: header {"alg":"none","typ":"JWT"}, same payload, empty signature.
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let unsigned = format!("{none_header}.{}.", token.split('.').nth(1).unwrap());
        assert!(keys.verify(&unsigned).is_err(), "alg none");
        // HS512 with the right secret is still refused: HS256 only.
        let claims = keys.verify(&token).unwrap();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(keys.verify(&hs512).is_err(), "other algorithm");
    }

    #[test]
    fn a_kept_token_is_refused_once_expired_and_only_its_exact_string_is_kept() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 1);
        let (token, claims) = keys.issue(7, "alice", now());
        assert_eq!(keys.verify(&token).unwrap(), claims);
        assert_eq!(keys.verify(&token).unwrap(), claims, "kept");
        // Same header and payload, another signature: not the kept string.
        let (head, _) = token.rsplit_once('.').unwrap();
        assert!(keys.verify(&format!("{head}.AAAA")).is_err(), "tampered signature");
        assert!(keys.verify(&format!("{token}x")).is_err(), "longer signature");
        // `exp` is one second after issue; the clock reaching it is the event waited for.
        while unix_secs() < claims.exp {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(keys.verify(&token).is_err(), "expired while kept");
    }

    #[test]
    fn kept_tokens_are_bounded() {
        let keys = keys();
        for user in 0..VERIFIED_KEPT as u64 + 10 {
            let (token, claims) = keys.issue(user + 1, "alice", now());
            assert_eq!(keys.verify(&token).unwrap(), claims);
            assert!(keys.kept().len() <= VERIFIED_KEPT);
        }
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn token_cookie_is_found_among_others() {
        assert_eq!(token_from_cookies(["a=1; token=abc.def; b=2"]), Some("abc.def"));
        assert_eq!(token_from_cookies(["a=1", "token=xyz"]), Some("xyz"));
        assert_eq!(token_from_cookies(["tokens=1; xtoken=2"]), None);
        assert_eq!(token_from_cookies(["token="]), None);
        assert!(session_cookie("t", 60, false).contains("HttpOnly"));
        assert!(!session_cookie("t", 60, false).contains("Secure"));
        assert!(session_cookie("t", 60, true).ends_with("; Secure"));
        assert_eq!(clearing_cookie(false), "token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0");
    }

    #[test]
    fn origin_rules() {
        let allowed = vec!["https://chat.example.com".to_owned()];
        assert!(origin_allowed(None, Some("127.0.0.1:8080"), &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), &[]));
        assert!(origin_allowed(Some("https://chat.example.com"), Some("10.0.0.1"), &allowed));
        assert!(!origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080"), &allowed));
        assert!(!origin_allowed(Some("http://127.0.0.1:8080.evil"), Some("127.0.0.1:8080"), &[]));
        assert!(!origin_allowed(Some("null"), Some("127.0.0.1:8080"), &[]));
        assert!(!origin_allowed(Some("http://127.0.0.1:8080/"), Some("127.0.0.1:8080"), &[]), "not an origin");
        assert!(!origin_allowed(Some("https://chat.example.com/"), Some("10.0.0.1"), &allowed));
        assert!(
            origin_allowed(Some("https://127.0.0.1:8080"), Some("127.0.0.1:8080"), &[]),
            "the own host behind a TLS-terminating proxy"
        );
        assert!(!origin_allowed(Some("ws://127.0.0.1:8080"), Some("127.0.0.1:8080"), &[]));
    }
}
