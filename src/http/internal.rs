//! The peer endpoint: another region's floe applies one replicated change here. Only a caller that
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
use crate::contract::peer_protocol::{APPLY_PATH, ApplyRequest, ApplyResponse};

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::POST,
        APPLY_PATH,
        Access::Peer,
        "replication.apply",
        apply,
    )]
}

async fn apply(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerIdentity>>,
    principal: Principal,
    IcebergJson(request): IcebergJson<ApplyRequest>,
) -> ApiResult<Json<ApplyResponse>> {
    let Some(Extension(PeerIdentity(region))) = peer else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            "only peer regions may apply replicated changes: present a token listed under \
             `replication.accept` of this floe",
        ));
    };
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
    let wh = state.catalog.warehouse(Some(&request.warehouse))?;
    Ok(Json(
        state
            .catalog
            .apply_replicated(wh, request, &principal.0)
            .await?,
    ))
}
