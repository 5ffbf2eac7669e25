//! Standard Webhooks signatures (standardwebhooks.com, v1): `webhook-id` (stable across
//! retries of the same message), `webhook-timestamp` (the attempt's time, Unix seconds) and
//! `webhook-signature` = space-separated `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`,
//! one per secret, so a subscriber can rotate keys without downtime.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The `webhook-signature` header value for `body`, signed with every key.
pub fn signature(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .filter_map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
            mac.update(msg_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new random secret in the `whsec_` format (32 bytes).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_with_every_key_and_ids_and_times_matter() {
        let a = herald_fhir::subscription::signing_key(&generate_secret()).expect("key");
        let b = herald_fhir::subscription::signing_key(&generate_secret()).expect("key");
        let both = signature(&[a.clone(), b], "msg_1", 1_700_000_000, b"{}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.split(' ').all(|s| s.starts_with("v1,")));
        assert_ne!(
            signature(std::slice::from_ref(&a), "msg_1", 1, b"{}"),
            signature(std::slice::from_ref(&a), "msg_2", 1, b"{}")
        );
        assert_ne!(
            signature(std::slice::from_ref(&a), "msg_1", 1, b"{}"),
            signature(&[a], "msg_1", 2, b"{}")
        );
    }
}
