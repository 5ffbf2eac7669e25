//! Fetching a JWKS document over HTTP, with refresh on an unknown `kid`.

use std::time::{Duration, Instant};

use url::Url;

use super::token::{KeyError, KeySet, TokenValidator};
use super::{AuthError, Principal};

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches the issuer's JWKS and installs it in a [`TokenValidator`].
///
/// Keys are cached in the validator by `kid`; a token with a `kid` not in the
/// cache triggers one refetch, at most once per `min_refresh_interval`, so a
/// stream of forged `kid`s cannot turn Herald into a load generator against
/// the identity provider. Call [`JwksFetcher::refresh`] periodically as well
/// (the binary owns that task) to pick up rotations and revocations.
#[derive(Debug)]
pub struct JwksFetcher {
    url: Url,
    http: reqwest::Client,
    min_refresh_interval: Duration,
    // tokio Mutex: held across the fetch so concurrent misses share one request.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksFetcher {
    /// `http` should have a timeout; the JWKS URL is operator configuration,
    /// so it is not subject to the endpoint policy, but it must be http(s).
    pub fn new(url: &str, http: reqwest::Client) -> Result<Self, KeyError> {
        let url = Url::parse(url).map_err(|e| KeyError::Fetch(format!("invalid JWKS URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(KeyError::Fetch("JWKS URL must be http or https".into()));
        }
        Ok(JwksFetcher {
            url,
            http,
            min_refresh_interval: Duration::from_secs(60),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    pub fn with_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// Download and parse the key set.
    pub async fn fetch(&self) -> Result<KeySet, KeyError> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| KeyError::Fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(KeyError::Fetch(format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(KeyError::Fetch("JWKS document too large".into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| KeyError::Fetch(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(KeyError::Fetch("JWKS document too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| KeyError::InvalidJwks)?;
        KeySet::from_jwks_json(&text)
    }

    /// Fetch now and install the keys in `validator`. On failure the previous
    /// keys stay in place.
    pub async fn refresh(&self, validator: &TokenValidator) -> Result<(), KeyError> {
        let mut last_fetch = self.last_fetch.lock().await;
        *last_fetch = Some(Instant::now());
        let keys = self.fetch().await?;
        validator.set_keys(keys);
        Ok(())
    }

    /// Refresh unless one happened within the minimum interval. Returns
    /// whether keys were fetched.
    async fn refresh_if_due(&self, validator: &TokenValidator) -> Result<bool, KeyError> {
        let mut last_fetch = self.last_fetch.lock().await;
        if last_fetch.is_some_and(|at| at.elapsed() < self.min_refresh_interval) {
            return Ok(false);
        }
        *last_fetch = Some(Instant::now());
        let keys = self.fetch().await?;
        validator.set_keys(keys);
        Ok(true)
    }

    /// [`TokenValidator::validate`], refetching the JWKS once when the token's
    /// key is unknown (the issuer rotated keys) or no keys are loaded yet.
    pub async fn validate(
        &self,
        validator: &TokenValidator,
        bearer: &str,
    ) -> Result<Principal, AuthError> {
        // Malformed or otherwise invalid tokens fail here without any fetch;
        // an empty key set answers UnknownKey.
        match validator.validate(bearer) {
            Err(AuthError::UnknownKey) => match self.refresh_if_due(validator).await {
                Ok(true) => validator.validate(bearer),
                Ok(false) => Err(AuthError::UnknownKey),
                Err(error) => {
                    tracing::warn!(%error, "JWKS refresh failed");
                    if validator.keys().is_empty() {
                        Err(AuthError::KeysUnavailable)
                    } else {
                        Err(AuthError::UnknownKey)
                    }
                }
            },
            other => other,
        }
    }
}
