//! Every error leaves floe as an Iceberg `ErrorModel`: `{"error": {"message", "type", "code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::CatalogError;
use crate::storage::StorageError;

/// The error body of the Iceberg REST spec.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorModel {
    pub message: String,
    #[serde(rename = "type")]
    pub r#type: String,
    pub code: u16,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IcebergErrorResponse {
    pub error: ErrorModel,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub r#type: &'static str,
    pub message: String,
    /// Extra top-level members beside `error` (e.g. a replica's position), for floe's own peers.
    pub extra: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, r#type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            r#type,
            message: message.into(),
            extra: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// An error of an extractor (body, query, path), keeping its status (400, 413, ...).
    pub fn rejection(status: StatusCode, message: impl Into<String>) -> Self {
        let r#type = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "RequestTooLargeException",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaTypeException",
            _ => "BadRequestException",
        };
        Self::new(status, r#type, message)
    }
}

impl ApiError {
    /// The error as the body's `error` member.
    pub fn model(&self) -> ErrorModel {
        ErrorModel {
            message: self.message.clone(),
            r#type: self.r#type.to_string(),
            code: self.status.as_u16(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = IcebergErrorResponse {
            error: self.model(),
        };
        match self.extra {
            None => (self.status, Json(body)).into_response(),
            Some((key, value)) => {
                let mut json = serde_json::to_value(body).unwrap_or_default();
                json[key] = value;
                (self.status, Json(json)).into_response()
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        use StatusCode as S;
        let message = err.to_string();
        match err {
            CatalogError::BadRequest(_) => {
                Self::new(S::BAD_REQUEST, "BadRequestException", message)
            }
            CatalogError::NotFound { kind, .. } => Self::new(S::NOT_FOUND, kind, message),
            CatalogError::AlreadyExists(_) => {
                Self::new(S::CONFLICT, "AlreadyExistsException", message)
            }
            CatalogError::NamespaceNotEmpty(_) => {
                Self::new(S::CONFLICT, "NamespaceNotEmptyException", message)
            }
            CatalogError::CommitFailed(_) => {
                Self::new(S::CONFLICT, "CommitFailedException", message)
            }
            CatalogError::Forbidden(_) => Self::new(S::FORBIDDEN, "ForbiddenException", message),
            CatalogError::ReplicaPosition { position, .. } => {
                let mut error = Self::new(S::CONFLICT, "ReplicaPositionMismatchException", message);
                error.extra = Some((
                    crate::contract::peer_protocol::POSITION_MEMBER,
                    serde_json::to_value(position).unwrap_or_default(),
                ));
                error
            }
            CatalogError::StaleLease(_) => Self::new(
                S::CONFLICT,
                crate::contract::peer_protocol::STALE_LEASE_TYPE,
                message,
            ),
            CatalogError::StaleEpoch { promotion, .. } => {
                let mut error = Self::new(
                    S::CONFLICT,
                    crate::contract::peer_protocol::STALE_EPOCH_TYPE,
                    message,
                );
                error.extra = Some((
                    crate::contract::peer_protocol::PROMOTION_MEMBER,
                    serde_json::to_value(promotion).unwrap_or_default(),
                ));
                error
            }
            CatalogError::ReplicaDiverged(_) => {
                Self::new(S::CONFLICT, "ReplicaDivergedException", message)
            }
            CatalogError::Unprocessable(_) => Self::new(
                S::UNPROCESSABLE_ENTITY,
                "UnprocessableEntityException",
                message,
            ),
            CatalogError::Unavailable(_) => {
                tracing::warn!(%message, "answering 503");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    message,
                )
            }
            CatalogError::CommitStateUnknown(_) => {
                tracing::error!(%message, "commit outcome unknown");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    "CommitStateUnknownException",
                    message,
                )
            }
            CatalogError::Storage(err) if err.is_refusal() => {
                Self::new(S::BAD_REQUEST, "BadRequestException", message)
            }
            CatalogError::Storage(StorageError::Denied { .. }) => {
                tracing::error!(%message, "storage refused access");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    message,
                )
            }
            CatalogError::Storage(_) => {
                tracing::error!(%message, "storage failure");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    message,
                )
            }
            CatalogError::Database(_)
            | CatalogError::Injected(_)
            | CatalogError::CorruptMetadata { .. }
            | CatalogError::Encoding(_) => {
                tracing::error!(%message, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "InternalServerError", message)
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
