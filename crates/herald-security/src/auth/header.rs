//! `Authorization: Bearer <token>` (RFC 6750 §2.1).

use super::AuthError;

/// Longest bearer token accepted (8 KiB); real JWTs are far smaller, and the
/// cap bounds the work an unauthenticated request can cause.
pub const MAX_BEARER_LEN: usize = 8 * 1024;

/// The token from an `Authorization` header value.
///
/// The scheme is matched case-insensitively and must be followed by exactly
/// one space; the token must be a non-empty RFC 6750 `b64token`
/// (`A-Z a-z 0-9 - . _ ~ + /` followed by optional `=` padding) of at most
/// [`MAX_BEARER_LEN`] bytes. Anything else — other schemes, leading or
/// trailing whitespace, several tokens — is refused rather than guessed at.
pub fn bearer_from_header(value: &str) -> Result<&str, AuthError> {
    const SCHEME: &str = "bearer";
    if value.len() > MAX_BEARER_LEN + SCHEME.len() + 1 {
        return Err(AuthError::TokenTooLong);
    }
    let Some(scheme) = value.get(..SCHEME.len()) else {
        return Err(AuthError::MalformedHeader("expected `Bearer <token>`"));
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::MalformedHeader(
            "authorization scheme must be Bearer",
        ));
    }
    let Some(token) = value[SCHEME.len()..].strip_prefix(' ') else {
        return Err(AuthError::MalformedHeader(
            "expected one space after Bearer",
        ));
    };
    if token.is_empty() {
        return Err(AuthError::MalformedHeader("empty bearer token"));
    }
    if token.len() > MAX_BEARER_LEN {
        return Err(AuthError::TokenTooLong);
    }
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
    {
        return Err(AuthError::MalformedHeader(
            "bearer token contains invalid characters",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bearer_in_any_case() {
        assert_eq!(bearer_from_header("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(bearer_from_header("bearer abc"), Ok("abc"));
        assert_eq!(
            bearer_from_header("BEARER a-b_c~d+e/f=="),
            Ok("a-b_c~d+e/f==")
        );
    }

    #[test]
    fn refuses_everything_else() {
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            " Bearer abc",
            "Bearer abc ",
            "Bearer\tabc",
            "Bearerabc",
            "Basic dXNlcjpwYXNz",
            "Bearer abc def",
            "Bearer ===",
            "Bearer a=b",
            "Bearer abc\r\n",
            "Bearer ab\u{e9}",
            "B\u{e9}arer abc",
            "\u{e9}\u{e9}\u{e9} abc",
            "Token abc",
        ] {
            assert!(bearer_from_header(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn length_cap() {
        let ok = format!("Bearer {}", "a".repeat(MAX_BEARER_LEN));
        assert!(bearer_from_header(&ok).is_ok());
        let long = format!("Bearer {}", "a".repeat(MAX_BEARER_LEN + 1));
        assert_eq!(bearer_from_header(&long), Err(AuthError::TokenTooLong));
        let huge = "a".repeat(1 << 20);
        assert_eq!(bearer_from_header(&huge), Err(AuthError::TokenTooLong));
    }
}
