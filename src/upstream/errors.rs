//! What can go wrong between floe and an upstream catalog, and the ErrorModel each becomes:
//! the client learns which upstream failed and how, never a bare 500.

use axum::http::StatusCode;

use crate::http::errors::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection (refused, DNS, TLS): 503, the client may retry.
    #[error("is unreachable: {0}")]
    Unreachable(String),
    /// No answer within the configured timeout: 504.
    #[error("did not answer within {0} ms")]
    Timeout(u64),
    /// An answer floe cannot pass on as an Iceberg answer: 502.
    #[error("sent an invalid answer: {0}")]
    InvalidAnswer(String),
    /// floe could not obtain credentials for it: 503.
    #[error("cannot be authenticated to: {0}")]
    Auth(String),
}

impl UpstreamError {
    pub(crate) fn from_reqwest(err: reqwest::Error, timeout_ms: u64) -> Self {
        if err.is_timeout() {
            Self::Timeout(timeout_ms)
        } else if err.is_connect() || err.is_request() {
            Self::Unreachable(error_chain(&err))
        } else {
            Self::InvalidAnswer(error_chain(&err))
        }
    }

    /// The ErrorModel for a request to warehouse `warehouse`'s upstream at `url`; `commit`: the
    /// request was a commit, whose outcome an invalid answer or a timeout leaves unknown (the
    /// spec's CommitStateUnknownException for 502 and 504).
    pub fn to_api_error(&self, warehouse: &str, url: &str, commit: bool) -> ApiError {
        let message = format!("the upstream catalog of warehouse `{warehouse}` at {url} {self}");
        let (status, r#type) = match self {
            // The connection may have failed after the commit was sent.
            Self::Unreachable(_) if commit => (
                StatusCode::SERVICE_UNAVAILABLE,
                "CommitStateUnknownException",
            ),
            Self::Unreachable(_) | Self::Auth(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            Self::Timeout(_) if commit => {
                (StatusCode::GATEWAY_TIMEOUT, "CommitStateUnknownException")
            }
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "GatewayTimeoutException"),
            Self::InvalidAnswer(_) if commit => {
                (StatusCode::BAD_GATEWAY, "CommitStateUnknownException")
            }
            Self::InvalidAnswer(_) => (StatusCode::BAD_GATEWAY, "BadGatewayException"),
        };
        tracing::warn!(%message, "upstream failure");
        ApiError::new(status, r#type, message)
    }
}

/// An error with its sources ("error sending request: connection refused"), as reqwest's own
/// `Display` names only the outermost.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
