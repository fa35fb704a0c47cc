//! Who is calling. Authentication is not configured yet, so every caller is `anonymous`; any
//! `Authorization` header (PyIceberg sends `Bearer None` when it has no credential) is ignored and
//! never logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::errors::ApiError;

/// The principal recorded with each log entry.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Principal("anonymous".to_string()))
    }
}
