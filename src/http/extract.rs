//! Extractors whose rejections are Iceberg `ErrorModel`s (axum's own answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::errors::ApiError;

/// A JSON body. The content type is not required: clients differ in what they send.
pub struct IcebergJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for IcebergJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejection(e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(IcebergJson)
            .map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))
    }
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
