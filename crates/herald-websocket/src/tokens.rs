//! Binding tokens: what `$get-ws-binding-token` hands out and `bind-with-token` redeems.
//!
//! A token is 256 random bits (hex), valid for `token_ttl`, bound to one tenant and the
//! subscriptions it was issued for, and single-use: redeeming removes it, so a token that
//! leaked from a log or a URL after use is worthless. Tokens live in this instance's memory
//! (bounded by `max_outstanding_tokens`); a deployment with several instances must send a
//! client's socket to the instance that issued its token until tokens move to the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// What a token lets its holder bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingGrant {
    pub tenant: String,
    pub subscription_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("too many binding tokens are outstanding; retry in a minute")]
    TooManyOutstanding,
    /// Deliberately one case: the client is not told whether the token ever existed.
    #[error("the binding token is unknown, expired or already used; get a new one with $get-ws-binding-token")]
    NotRedeemable,
}

#[derive(Debug)]
struct Outstanding {
    grant: BindingGrant,
    expires_at: Instant,
}

/// The tokens issued by this instance and not yet redeemed.
#[derive(Debug)]
pub struct BindingTokens {
    ttl: Duration,
    max_outstanding: usize,
    outstanding: Mutex<HashMap<String, Outstanding>>,
}

impl BindingTokens {
    pub fn new(ttl: Duration, max_outstanding: usize) -> Self {
        Self {
            ttl,
            max_outstanding,
            outstanding: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a token for `grant` at `now`; returns it with the instant it expires.
    pub fn issue(
        &self,
        grant: BindingGrant,
        now: Instant,
    ) -> Result<(String, Instant), TokenError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now + self.ttl;
        let mut outstanding = self.lock();
        if outstanding.len() >= self.max_outstanding {
            outstanding.retain(|_, t| t.expires_at > now);
            if outstanding.len() >= self.max_outstanding {
                return Err(TokenError::TooManyOutstanding);
            }
        }
        outstanding.insert(token.clone(), Outstanding { grant, expires_at });
        Ok((token, expires_at))
    }

    /// Redeems `token` at `now`: it is gone afterwards, whether it was still valid or not.
    pub fn redeem(&self, token: &str, now: Instant) -> Result<BindingGrant, TokenError> {
        match self.lock().remove(token) {
            Some(t) if now < t.expires_at => Ok(t.grant),
            _ => Err(TokenError::NotRedeemable),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outstanding>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.outstanding.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> BindingGrant {
        BindingGrant {
            tenant: "t".into(),
            subscription_ids: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_token_is_256_random_bits_and_redeems_once() {
        let tokens = BindingTokens::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let (token, expires_at) = tokens.issue(grant(), now).expect("issued");
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(expires_at, now + Duration::from_secs(60));
        let (other, _) = tokens.issue(grant(), now).expect("issued");
        assert_ne!(token, other);
        assert_eq!(tokens.redeem(&token, now), Ok(grant()));
        assert_eq!(tokens.redeem(&token, now), Err(TokenError::NotRedeemable));
    }

    #[test]
    fn an_expired_token_is_refused_and_forgotten() {
        let tokens = BindingTokens::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let (token, _) = tokens.issue(grant(), now).expect("issued");
        let later = now + Duration::from_secs(60);
        assert_eq!(tokens.redeem(&token, later), Err(TokenError::NotRedeemable));
        assert_eq!(
            tokens.redeem("not-a-token", now),
            Err(TokenError::NotRedeemable)
        );
    }

    #[test]
    fn outstanding_tokens_are_bounded_and_expired_ones_make_room() {
        let tokens = BindingTokens::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        tokens.issue(grant(), now).expect("first");
        tokens.issue(grant(), now).expect("second");
        assert_eq!(
            tokens.issue(grant(), now),
            Err(TokenError::TooManyOutstanding)
        );
        let later = now + Duration::from_secs(61);
        tokens.issue(grant(), later).expect("room after expiry");
    }
}
