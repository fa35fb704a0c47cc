//! The one client type floe uses to talk to a peer region: it applies a replicated change, asks
//! for promotions, and hands tables over.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::contract::peer_protocol::{
    APPLY_PATH, ApplyRequest, ApplyResponse, HANDOVER_PATH, HandoverAnswer, HandoverRequest,
    POSITION_MEMBER, PREPARE_PATH, PROMOTION_MEMBER, PROMOTIONS_PATH, PromotionNotice, Promotions,
    ReplicaPosition, STALE_EPOCH_TYPE, STALE_LEASE_TYPE,
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
    /// The peer promoted its replica at a newer epoch: this region is no longer the primary.
    #[error("peer {region}: {message}")]
    Superseded {
        region: String,
        message: String,
        promotion: PromotionNotice,
    },
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

    /// Sends `call` to `region` with its credential; the answer's status and JSON body.
    async fn send(
        &self,
        region: &str,
        mut call: reqwest::RequestBuilder,
        credential: Option<&str>,
    ) -> Result<(StatusCode, Value), PeerError> {
        if let Some(token) = credential {
            call = call.bearer_auth(token);
        }
        let response = call
            .send()
            .await
            .map_err(|e| unavailable(region, e.to_string()))?;
        let status = response.status();
        let body = response
            .json()
            .await
            .map_err(|e| unavailable(region, format!("unreadable answer ({status}): {e}")))?;
        Ok((status, body))
    }

    /// The promotions `region` made of this region's tables ([`PROMOTIONS_PATH`]).
    pub async fn promotions(
        &self,
        region: &str,
        base_url: &str,
        credential: Option<&str>,
    ) -> Result<Promotions, PeerError> {
        let url = format!("{}{PROMOTIONS_PATH}", base_url.trim_end_matches('/'));
        let (status, body) = self.send(region, self.http.get(&url), credential).await?;
        if !status.is_success() {
            return Err(failure(region, status, &body));
        }
        serde_json::from_value(body)
            .map_err(|e| unavailable(region, format!("unexpected answer: {e}")))
    }

    /// A step of a planned switchover, sent to the table's primary `region` ([`HANDOVER_PATH`]).
    pub async fn handover(
        &self,
        region: &str,
        base_url: &str,
        credential: Option<&str>,
        request: &HandoverRequest,
    ) -> Result<HandoverAnswer, PeerError> {
        let url = format!("{}{HANDOVER_PATH}", base_url.trim_end_matches('/'));
        let call = self.http.post(&url).json(request);
        let (status, body) = self.send(region, call, credential).await?;
        if !status.is_success() {
            return Err(failure(region, status, &body));
        }
        serde_json::from_value(body)
            .map_err(|e| unavailable(region, format!("unexpected answer: {e}")))
    }

    /// Applies one change at the peer ([`APPLY_PATH`]).
    pub async fn apply(
        &self,
        region: &str,
        base_url: &str,
        credential: Option<&str>,
        request: &ApplyRequest,
    ) -> Result<ApplyResponse, PeerError> {
        self.post_change(region, base_url, APPLY_PATH, credential, request)
            .await
    }

    /// Asks the peer whether a table update would apply now, applying nothing
    /// ([`PREPARE_PATH`]); refused as an apply would be.
    pub async fn prepare(
        &self,
        region: &str,
        base_url: &str,
        credential: Option<&str>,
        request: &ApplyRequest,
    ) -> Result<ApplyResponse, PeerError> {
        self.post_change(region, base_url, PREPARE_PATH, credential, request)
            .await
    }

    async fn post_change(
        &self,
        region: &str,
        base_url: &str,
        path: &str,
        credential: Option<&str>,
        request: &ApplyRequest,
    ) -> Result<ApplyResponse, PeerError> {
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        let call = self.http.post(&url).json(request);
        let (status, body) = self.send(region, call, credential).await?;
        if status.is_success() {
            return serde_json::from_value(body)
                .map_err(|e| unavailable(region, format!("unexpected answer: {e}")));
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
        if status == StatusCode::CONFLICT
            && body["error"]["type"] == STALE_EPOCH_TYPE
            && let Ok(promotion) = serde_json::from_value(body[PROMOTION_MEMBER].clone())
        {
            return Err(PeerError::Superseded {
                region: region.to_string(),
                message,
                promotion,
            });
        }
        if status == StatusCode::CONFLICT && body["error"]["type"] == STALE_LEASE_TYPE {
            return Err(PeerError::LeaseRevoked {
                region: region.to_string(),
                message,
            });
        }
        Err(failure(region, status, &body))
    }
}

fn unavailable(region: &str, message: String) -> PeerError {
    PeerError::Unavailable {
        region: region.to_string(),
        message,
    }
}

/// An error answer of no particular kind: retried later when the peer failed on its side (5xx,
/// 429), else a refusal an operator must look at.
fn failure(region: &str, status: StatusCode, body: &Value) -> PeerError {
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .to_string();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return unavailable(region, format!("{status}: {message}"));
    }
    PeerError::Refused {
        region: region.to_string(),
        status: status.as_u16(),
        message,
    }
}
