//! Bearer tokens for the TCP listener: `Authorization: Bearer <token>` on every request but
//! `/healthz`, compared in constant time.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::api::ErrorBody;
use crate::error::{Error, IoContext, Result};

/// The secret a TCP client must present. Its `Debug` hides it.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text, surrounding whitespace (a file's final newline) removed. Refuses
    /// an empty one.
    pub fn new(text: &str) -> Result<Token> {
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::invalid(
                "token",
                "the token is empty",
                "put a long random secret in --token-file or CHAOS_TOKEN",
            ));
        }
        Ok(Token(t.as_bytes().into()))
    }

    /// The token in `path`.
    pub fn from_file(path: &str) -> Result<Token> {
        Token::new(&std::fs::read_to_string(path).ctx(|| format!("reading the token {path}"))?)
    }

    /// Whether `given` is the token. Takes the same time whatever bytes differ (a length
    /// mismatch is told apart, the length is no secret worth hiding).
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(&self.0, given)
    }
}

/// `a == b`, without returning early at the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The token in an `Authorization` header value: `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Middleware: 401 with a JSON error unless the request carries the token. `/healthz` is open
/// (liveness probes carry no secrets).
pub async fn require(State(token): State<Token>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .is_some_and(|t| token.matches(t));
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(ErrorBody {
            error: "missing or wrong bearer token; send `Authorization: Bearer <token>`".into(),
            field: None,
            errors: Vec::new(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        let t = Token::new("s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cres"));
        assert!(!t.matches(b"S3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3crett"));
        assert!(!t.matches(b""));
        assert!(Token::new(" \n").is_err());
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn parses_bearer_header() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
