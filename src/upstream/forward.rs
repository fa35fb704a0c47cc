//! Forwarding one Iceberg REST request to an upstream catalog and its answer back.
//!
//! The upstream path is the matched route's template filled in by [`UpstreamPath`]: the
//! upstream's prefix in place of floe's, and each name parsed by `names` (no `.`, `..` or `/`)
//! and percent-encoded whole, so a request can only ever reach the same endpoint at the
//! upstream. Only the headers that carry meaning for the catalog go either way. Success bodies
//! are streamed through unread; an error answer is read (bounded) to check that it is an Iceberg
//! ErrorModel, which passes through as sent, anything else becoming 502.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use super::client::{UpstreamAnswer, UpstreamCatalog};
use super::errors::UpstreamError;
use crate::error::{CatalogError, CatalogResult};
use crate::http::errors::ApiResult;
use crate::names::{NamespaceName, validate_table_name};

/// Everything but RFC 3986's unreserved characters is encoded in a name's path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The upstream's prefix goes in as Apache Iceberg's client puts it, unencoded (it may span
/// segments, and it comes from the upstream itself), with only what would end the path encoded.
const PREFIX: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Request headers passed on (`Authorization` is the auth mode's to decide).
const REQUEST_HEADERS: [&str; 6] = [
    "content-type",
    "accept",
    "if-none-match",
    "idempotency-key",
    "x-iceberg-access-delegation",
    "x-client-version",
];

/// Answer headers passed back.
const ANSWER_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
    header::CACHE_CONTROL,
];

/// The most of an upstream error answer read to check that it is an ErrorModel.
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// One request to forward, as the router matched it.
pub struct Forwarded<'a> {
    pub method: Method,
    /// The route's template, e.g. `/v1/{prefix}/namespaces/{namespace}`.
    pub route: &'a str,
    /// The path parameters, percent-decoded.
    pub params: &'a [(&'a str, &'a str)],
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: bytes::Bytes,
}

/// The path of a request at the upstream, its names checked and encoded; the upstream's prefix
/// goes in by [`UpstreamPath::with_prefix`] (it is only known once the upstream is asked).
#[derive(Debug)]
pub struct UpstreamPath {
    /// Encoded segments; `None` stands for the prefix.
    segments: Vec<Option<String>>,
}

impl UpstreamPath {
    /// From a route template and its (percent-decoded) parameters: a name that `names` refuses
    /// is a 400 before anything is sent.
    pub fn new(route: &str, params: &[(&str, &str)]) -> CatalogResult<Self> {
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
                .ok_or_else(|| CatalogError::BadRequest(format!("missing path parameter `{name}`")))
        };
        let mut segments = Vec::new();
        for segment in route.trim_start_matches('/').split('/') {
            let value = match segment {
                "{prefix}" => {
                    segments.push(None);
                    continue;
                }
                "{namespace}" => {
                    let value = param("namespace")?;
                    NamespaceName::from_url_segment(value)?;
                    value
                }
                "{table}" | "{view}" => {
                    let value = param(segment.trim_matches(['{', '}']))?;
                    validate_table_name(value)?;
                    value
                }
                literal if !literal.starts_with('{') => {
                    segments.push(Some(literal.to_string()));
                    continue;
                }
                other => {
                    return Err(CatalogError::BadRequest(format!(
                        "path parameter {other} is not forwarded"
                    )));
                }
            };
            segments.push(Some(utf8_percent_encode(value, SEGMENT).to_string()));
        }
        Ok(Self { segments })
    }

    /// The relative path (`v1/...`) with the upstream's prefix, or none.
    pub fn with_prefix(&self, upstream_prefix: Option<&str>) -> String {
        let prefix = upstream_prefix.map(|p| utf8_percent_encode(p, PREFIX).to_string());
        self.segments
            .iter()
            .filter_map(|segment| segment.clone().or_else(|| prefix.clone()))
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl UpstreamCatalog {
    /// Forwards `request` and answers as the upstream did (see the module doc).
    pub async fn forward(&self, request: Forwarded<'_>) -> ApiResult<Response> {
        let failed = |err: UpstreamError| err.to_api_error(self.warehouse(), self.url(), false);
        let path = UpstreamPath::new(request.route, request.params)?;
        let remote = self
            .remote_config(request.headers.get(header::AUTHORIZATION))
            .await
            .map_err(failed)?;
        let mut url = self
            .endpoint(&path.with_prefix(remote.prefix()))
            .map_err(failed)?;
        url.set_query(request.query);
        let mut headers = HeaderMap::new();
        for name in REQUEST_HEADERS {
            for value in request.headers.get_all(name) {
                headers.append(HeaderName::from_static(name), value.clone());
            }
        }
        if let Some(value) = request.headers.get(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        let body = (!request.body.is_empty()).then_some(request.body);
        let answer = self
            .send(request.method, url, headers, body)
            .await
            .map_err(failed)?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_MODIFIED {
            return Ok(streamed(answer));
        }
        checked_error(answer).await.map_err(failed)
    }
}

fn answer_headers(answer: &UpstreamAnswer) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in ANSWER_HEADERS {
        for value in answer.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// A success answer, its body streamed through.
fn streamed(answer: UpstreamAnswer) -> Response {
    let headers = answer_headers(&answer);
    let chunks = futures::stream::unfold(Some(answer.body), |body| async move {
        let mut body = body?;
        match body.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
            Ok(None) => None,
            Err(err) => Some((Err(err), None)),
        }
    });
    (answer.status, headers, Body::from_stream(chunks)).into_response()
}

/// An error answer passed through when it is an Iceberg ErrorModel; otherwise 502.
async fn checked_error(answer: UpstreamAnswer) -> Result<Response, UpstreamError> {
    let status = answer.status;
    let headers = answer_headers(&answer);
    let mut body = answer.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body
        .chunk()
        .await
        .map_err(|e| UpstreamError::InvalidAnswer(format!("reading its {status} answer: {e}")))?
    {
        if bytes.len() + chunk.len() > MAX_ERROR_BODY_BYTES {
            return Err(UpstreamError::InvalidAnswer(format!(
                "its {status} answer is larger than {MAX_ERROR_BODY_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if is_error_model(&bytes) {
        return Ok((status, headers, bytes).into_response());
    }
    let text = String::from_utf8_lossy(&bytes);
    Err(UpstreamError::InvalidAnswer(format!(
        "{status} with a body that is not an Iceberg ErrorModel: {:?}",
        text.chars().take(200).collect::<String>()
    )))
}

/// `{"error": {"message": string, "type": string, "code": integer}}`.
fn is_error_model(bytes: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let error = &value["error"];
    error["message"].is_string() && error["type"].is_string() && error["code"].is_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "/v1/{prefix}/namespaces/{namespace}/tables/{table}";

    #[test]
    fn the_path_is_the_template_filled_with_encoded_validated_names() {
        let params = [
            ("prefix", "lake"),
            ("namespace", "a\u{1f}b c"),
            ("table", "t%1"),
        ];
        let path = UpstreamPath::new(TABLE, &params).unwrap();
        assert_eq!(
            path.with_prefix(Some("ws/1")),
            "v1/ws/1/namespaces/a%1Fb%20c/tables/t%251"
        );
        assert_eq!(
            path.with_prefix(None),
            "v1/namespaces/a%1Fb%20c/tables/t%251"
        );
    }

    #[test]
    fn names_that_would_leave_the_endpoint_are_refused() {
        for (namespace, table) in [("..", "t"), ("ns", ".."), ("a/b", "t"), ("ns", "x/y")] {
            let params = [
                ("prefix", "lake"),
                ("namespace", namespace),
                ("table", table),
            ];
            assert!(
                UpstreamPath::new(TABLE, &params).is_err(),
                "{namespace:?} {table:?} accepted"
            );
        }
    }

    #[test]
    fn only_error_models_pass_as_errors() {
        assert!(is_error_model(
            br#"{"error":{"message":"no","type":"NoSuchTableException","code":404}}"#
        ));
        assert!(!is_error_model(b"<html>502 Bad Gateway</html>"));
        assert!(!is_error_model(br#"{"message":"no"}"#));
    }
}
