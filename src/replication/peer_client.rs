//! The one client type floe uses to talk to a peer region: it applies a replicated change.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::contract::peer_protocol::{
    APPLY_PATH, ApplyRequest, ApplyResponse, POSITION_MEMBER, ReplicaPosition, STALE_LEASE_TYPE,
};

/// Why a peer did not apply a change.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer is unreachable or failed on its side: retry later.
    #[error("peer {region} unavailable: {message}")]
    Unavailable { region: String, message: String },
    /// The replica is not where the change expects it; `position` is where it is (`None`: absent).
    #[error("peer {region}: {message}")]
    Position {
        region: String,
        message: String,
        position: Option<ReplicaPosition>,
    },
    /// The peer has accepted changes under a newer lease of the stream: this sender's lease was
    /// revoked, and it must stop.
    #[error("peer {region}: {message}")]
    LeaseRevoked { region: String, message: String },
    /// The peer refuses the change (credentials, a name clash, invalid content): an operator must act.
    #[error("peer {region} refused the change ({status}): {message}")]
    Refused {
        region: String,
        status: u16,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct PeerClient {
    http: reqwest::Client,
}

impl Default for PeerClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl PeerClient {
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("the HTTP client builds"),
        }
    }

    pub async fn apply(
        &self,
        region: &str,
        base_url: &str,
        credential: Option<&str>,
        request: &ApplyRequest,
    ) -> Result<ApplyResponse, PeerError> {
        let url = format!("{}{APPLY_PATH}", base_url.trim_end_matches('/'));
        let mut call = self.http.post(&url).json(request);
        if let Some(token) = credential {
            call = call.bearer_auth(token);
        }
        let unavailable = |message: String| PeerError::Unavailable {
            region: region.to_string(),
            message,
        };
        let response = call.send().await.map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| unavailable(format!("unreadable answer ({status}): {e}")))?;
        if status.is_success() {
            return serde_json::from_value(body)
                .map_err(|e| unavailable(format!("unexpected answer: {e}")));
        }
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        if status == StatusCode::CONFLICT
            && body["error"]["type"] == "ReplicaPositionMismatchException"
        {
            return Err(PeerError::Position {
                region: region.to_string(),
                message,
                position: serde_json::from_value(body[POSITION_MEMBER].clone()).ok(),
            });
        }
        if status == StatusCode::CONFLICT && body["error"]["type"] == STALE_LEASE_TYPE {
            return Err(PeerError::LeaseRevoked {
                region: region.to_string(),
                message,
            });
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!("{status}: {message}")));
        }
        Err(PeerError::Refused {
            region: region.to_string(),
            status: status.as_u16(),
            message,
        })
    }
}
