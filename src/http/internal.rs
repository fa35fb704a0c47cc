//! The peer endpoints: another region's floe applies one replicated change here, asks which of
//! its tables this region promoted, or asks this region to hand a table over to it. Only a caller that
//! authenticated with a peer token (`replication.accept`) for the region it claims may call it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};

use super::AppState;
use super::auth::{PeerIdentity, Principal};
use super::errors::{ApiError, ApiResult};
use super::extract::IcebergJson;
use super::routes::{Route, route};
use crate::auth::Access;
use crate::contract::peer_protocol::{
    APPLY_PATH, ApplyRequest, ApplyResponse, HANDOVER_PATH, HandoverAnswer, HandoverRequest,
    PREPARE_PATH, PROMOTIONS_PATH, Promotions,
};

pub fn routes() -> Vec<Route> {
    vec![
        route(
            Method::POST,
            APPLY_PATH,
            Access::Peer,
            "replication.apply",
            apply,
        ),
        route(
            Method::POST,
            PREPARE_PATH,
            Access::Peer,
            "replication.prepare",
            prepare,
        ),
        route(
            Method::POST,
            HANDOVER_PATH,
            Access::Peer,
            "replication.handover",
            handover,
        ),
        route(
            Method::GET,
            PROMOTIONS_PATH,
            Access::Peer,
            "replication.promotions",
            promotions,
        ),
    ]
}

/// The calling peer region's tables whose replicas were promoted here.
async fn promotions(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerIdentity>>,
) -> ApiResult<Json<Promotions>> {
    let region = peer_region(peer)?;
    Ok(Json(state.catalog.promotions_from(&region).await?))
}

/// A step of a planned switchover of one of this region's tables to the calling peer region.
async fn handover(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerIdentity>>,
    IcebergJson(request): IcebergJson<HandoverRequest>,
) -> ApiResult<Json<HandoverAnswer>> {
    let region = peer_region(peer)?;
    Ok(Json(state.catalog.hand_over(&region, request).await?))
}

fn peer_region(peer: Option<Extension<PeerIdentity>>) -> ApiResult<String> {
    match peer {
        Some(Extension(PeerIdentity(region))) => Ok(region),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            "only peer regions may call this endpoint: present a token listed under \
             `replication.accept` of this floe",
        )),
    }
}

/// The calling peer region, which must be the one the change claims to come from.
fn sender_of(peer: Option<Extension<PeerIdentity>>, request: &ApplyRequest) -> ApiResult<()> {
    let region = peer_region(peer)?;
    if region != request.source_region {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            format!(
                "this token belongs to region `{region}`, but the change claims to come from `{}`",
                request.source_region
            ),
        ));
    }
    Ok(())
}

async fn apply(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerIdentity>>,
    principal: Principal,
    IcebergJson(request): IcebergJson<ApplyRequest>,
) -> ApiResult<Json<ApplyResponse>> {
    sender_of(peer, &request)?;
    let wh = state.catalog.warehouse(Some(&request.warehouse))?;
    Ok(Json(
        state
            .catalog
            .apply_replicated(wh, request, &principal.0)
            .await?,
    ))
}

/// Whether a synchronous commit's update would apply here now (`catalog::replica_prepare`).
async fn prepare(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerIdentity>>,
    IcebergJson(request): IcebergJson<ApplyRequest>,
) -> ApiResult<Json<ApplyResponse>> {
    sender_of(peer, &request)?;
    let wh = state.catalog.warehouse(Some(&request.warehouse))?;
    Ok(Json(state.catalog.prepare_replicated(wh, request).await?))
}
