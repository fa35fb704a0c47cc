//! The access guard: every request to a declared route is authenticated and authorised here,
//! before its handler runs, and refused requests and management actions are recorded in the audit
//! trail.
//!
//! The route's declaration ([`RouteTable`]) says what it needs; the caller's credential says who
//! it is ([`Authenticator`]); [`Identity::check`] decides. A request without a valid credential
//! gets 401 `NotAuthorizedException`, one without the role it needs 403 `ForbiddenException`
//! naming the role. Handlers never look at credentials: they get the principal (recorded with log
//! entries) and, on the peer endpoint, the peer's region.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;

use super::errors::ApiError;
use super::routes::{RouteSpec, RouteTable};
use crate::auth::{Access, AuthError, Authenticator, Identity};
use crate::db::audit::{self, NewEvent, Outcome};

/// The principal recorded with each log entry.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

/// The region of a peer that authenticated with its replication token.
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub String);

/// What the guard needs: who may call, what each route needs, where the audit trail is.
pub struct Guard {
    authenticator: Arc<Authenticator>,
    routes: RouteTable,
    pool: PgPool,
}

impl Guard {
    pub fn new(authenticator: Arc<Authenticator>, routes: RouteTable, pool: PgPool) -> Self {
        Self {
            authenticator,
            routes,
            pool,
        }
    }

    /// Records one audit event; a failure to record is logged, and the answer still goes out.
    async fn audit(&self, event: NewEvent) {
        if let Err(err) = audit::record(&self.pool, &event).await {
            tracing::warn!(%err, action = %event.action, "could not record an audit event");
        }
    }
}

/// The most of an error answer read back for the audit trail's `detail`.
const MAX_DETAIL_BODY: usize = 64 * 1024;

/// Middleware on every declared route (see the module docs).
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    let target = format!("{method} {}", parts.uri.path());
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let Some(spec) = guard.routes.find(&method, &matched).cloned() else {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowedException",
            "This endpoint does not accept that HTTP method",
        )
        .into_response();
    };
    let identity = match spec.access {
        Access::Public => Identity::Anonymous,
        _ => match guard
            .authenticator
            .authenticate(parts.headers.get(header::AUTHORIZATION))
            .await
        {
            Ok(identity) => identity,
            Err(AuthError::Invalid(message)) => {
                let event = refusal("unauthenticated", &spec, &target, 401, &message);
                guard.audit(event).await;
                let mut response =
                    ApiError::new(StatusCode::UNAUTHORIZED, "NotAuthorizedException", message)
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            Err(AuthError::Unavailable(message)) => {
                tracing::warn!(%message, "cannot check a credential now");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    message,
                )
                .into_response();
            }
        },
    };
    if let Err(reason) = check(&spec, &identity, &mut parts).await {
        let event = refusal(&identity.principal(), &spec, &target, 403, &reason);
        guard.audit(event).await;
        return ApiError::new(StatusCode::FORBIDDEN, "ForbiddenException", reason).into_response();
    }
    let principal = identity.principal();
    parts.extensions.insert(Principal(principal.clone()));
    if let Identity::Peer { region } = &identity {
        parts.extensions.insert(PeerIdentity(region.clone()));
    }
    let response = next.run(Request::from_parts(parts, body)).await;

    let status = response.status();
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    let management_action =
        spec.access == Access::Admin && !matches!(method, Method::GET | Method::HEAD);
    if !refused && !management_action {
        return response;
    }
    let (response, detail) = if status.is_success() {
        (response, None)
    } else {
        read_message(response).await
    };
    let outcome = if refused {
        Outcome::Refused
    } else if status.is_success() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    guard
        .audit(NewEvent {
            principal,
            action: spec.action.to_string(),
            target,
            outcome,
            status: status.as_u16(),
            detail,
        })
        .await;
    response
}

/// Whether `identity` may make this request, with the warehouse its path or query names.
async fn check(spec: &RouteSpec, identity: &Identity, parts: &mut Parts) -> Result<(), String> {
    let params = RawPathParams::from_request_parts(parts, &()).await.ok();
    let param = |name: &str| {
        params
            .iter()
            .flat_map(|p| p.iter())
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let warehouse_query: Option<String> = parts.uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "warehouse")
            .map(|(_, value)| value.into_owned())
    });
    identity.check(spec.access, spec.scope(param, warehouse_query.as_deref()))
}

fn refusal(principal: &str, spec: &RouteSpec, target: &str, status: u16, reason: &str) -> NewEvent {
    NewEvent {
        principal: principal.to_string(),
        action: spec.action.to_string(),
        target: target.to_string(),
        outcome: Outcome::Refused,
        status,
        detail: Some(reason.to_string()),
    }
}

/// The message of an error answer (an ErrorModel's, or an OAuth error's description), and the
/// answer rebuilt for the client.
async fn read_message(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    // Only a body known to be small is read back (error answers are); any other passes untouched.
    let small = HttpBody::size_hint(&body)
        .upper()
        .is_some_and(|len| len <= MAX_DETAIL_BODY as u64);
    if !small {
        return (Response::from_parts(parts, body), None);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_DETAIL_BODY).await else {
        return (Response::from_parts(parts, Body::empty()), None);
    };
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| {
            body["error"]["message"]
                .as_str()
                .or_else(|| body["error_description"].as_str())
                .map(str::to_string)
        });
    (Response::from_parts(parts, Body::from(bytes)), message)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "the request reached its handler without passing the access guard",
            )
        })
    }
}
