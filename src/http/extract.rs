//! Extractors whose rejections are Iceberg `ErrorModel`s (axum's own answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::errors::ApiError;

/// A JSON body. The content type is not required: clients differ in what they send. No string
/// in it may hold U+0000: PostgreSQL's jsonb (the update log, namespace properties) cannot store
/// one, so it is refused here, for every endpoint, before anything is written.
pub struct IcebergJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for IcebergJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejection(e.status(), e.body_text()))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))?;
        if escapes_nul(&bytes) {
            return Err(ApiError::bad_request(
                "Malformed request body: a string holds U+0000 (\\u0000), which floe cannot \
                 store; remove it",
            ));
        }
        Ok(IcebergJson(value))
    }
}

/// Whether valid JSON text holds the escape `\u0000` in a string (raw control characters are not
/// valid JSON, so this is the only way a NUL gets in). Escaped backslashes are skipped, so the
/// six characters `\\u0000` (a backslash, then `u0000`) are not taken for one.
fn escapes_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Query parameters.
pub struct IcebergQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for IcebergQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|q| IcebergQuery(q.0))
            .map_err(|e| ApiError::bad_request(format!("Invalid query: {}", e.body_text())))
    }
}

/// Path parameters.
pub struct IcebergPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for IcebergPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::from_request_parts(parts, state)
            .await
            .map(|p| IcebergPath(p.0))
            .map_err(|e| ApiError::bad_request(format!("Invalid path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::escapes_nul;

    #[test]
    fn finds_escaped_nul_only() {
        assert!(escapes_nul(br#"{"a":"x\u0000y"}"#));
        assert!(!escapes_nul(br#"{"a":"x\\u0000y"}"#));
        assert!(escapes_nul(br#"{"a":"x\\\u0000y"}"#));
        assert!(!escapes_nul(br#"{"a":"x\u0001y"}"#));
    }
}
