//! One upstream catalog: where it is, how floe authenticates to it, and what its `/v1/config`
//! says (its prefix and endpoints), asked once it is first needed and kept.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;
use url::Url;

use super::auth::UpstreamAuth;
use super::config::RemoteConfig;
use super::errors::UpstreamError;
use super::forward::UpstreamPath;
use super::observer::Observations;
use crate::config::UpstreamSettings;

#[derive(Debug)]
pub struct UpstreamCatalog {
    /// The floe warehouse it serves, for messages.
    warehouse: String,
    /// The base URL, ending in `/`.
    base: Url,
    /// Sent as `?warehouse=` to its `/v1/config`.
    remote_warehouse: Option<String>,
    auth: UpstreamAuth,
    http: reqwest::Client,
    timeout_ms: u64,
    poll_interval_ms: u64,
    /// Hints for the warehouse's observer (`observer`).
    observations: Observations,
    /// The largest request body forwarded (floe's `max_body_bytes`).
    max_body_bytes: usize,
    remote: OnceCell<RemoteConfig>,
    /// The intercepted commits under way, each until its intent is settled (`commit`), which
    /// may be after its client was answered.
    settlements: TaskTracker,
}

/// An upstream answer whose body is still to be read (it may be streamed on to the client).
pub struct UpstreamAnswer {
    pub status: reqwest::StatusCode,
    pub headers: HeaderMap,
    pub body: reqwest::Response,
}

impl UpstreamCatalog {
    /// From validated settings (`Settings::validate` checked the URL).
    pub fn new(
        warehouse: &str,
        settings: &UpstreamSettings,
        max_body_bytes: usize,
    ) -> Result<Self, UpstreamError> {
        let mut base = Url::parse(&settings.url)
            .map_err(|e| UpstreamError::Unreachable(format!("invalid URL: {e}")))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(10_000)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(Self {
            warehouse: warehouse.to_string(),
            base,
            remote_warehouse: settings.warehouse.clone(),
            auth: UpstreamAuth::from_settings(settings),
            http,
            timeout_ms: settings.timeout_ms,
            poll_interval_ms: settings.poll_interval_ms,
            observations: Observations::default(),
            max_body_bytes,
            remote: OnceCell::new(),
            settlements: TaskTracker::new(),
        })
    }

    /// The intercepted commits under way (`commit::intercept` runs each in a task of it).
    pub(super) fn settlements(&self) -> &TaskTracker {
        &self.settlements
    }

    /// Waits until every intercepted commit under way is settled; for a graceful stop, once
    /// requests have stopped, so that it leaves no answered commit unlogged.
    pub async fn settled(&self) {
        self.settlements.close();
        self.settlements.wait().await;
    }

    /// The base URL as configured (for messages; it holds no credentials).
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    pub fn warehouse(&self) -> &str {
        &self.warehouse
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    pub fn poll_interval_ms(&self) -> u64 {
        self.poll_interval_ms
    }

    /// Where what passes through leaves hints of changed tables.
    pub fn observations(&self) -> &Observations {
        &self.observations
    }

    /// The upstream's `/v1/config` for this warehouse, asked on first use (so floe starts while
    /// the upstream is down) and kept; a failed attempt is tried again by the next request.
    pub async fn remote_config(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<&RemoteConfig, UpstreamError> {
        self.remote
            .get_or_try_init(|| async {
                let mut url = self.endpoint("v1/config")?;
                if let Some(warehouse) = &self.remote_warehouse {
                    url.query_pairs_mut().append_pair("warehouse", warehouse);
                }
                let mut headers = HeaderMap::new();
                if let Some(value) = authorization {
                    headers.insert(header::AUTHORIZATION, value.clone());
                }
                let answer = self.send(Method::GET, url, headers, None).await?;
                RemoteConfig::read(answer).await
            })
            .await
    }

    /// `v1/<path>` under the base URL; `path` must already be percent-encoded.
    pub(super) fn endpoint(&self, path: &str) -> Result<Url, UpstreamError> {
        self.base
            .join(path)
            .map_err(|e| UpstreamError::InvalidAnswer(format!("cannot build a URL: {e}")))
    }

    /// One call; `headers` are sent as given, with the `Authorization` the auth mode gives for
    /// the client's (`headers`' own, in pass-through mode).
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        mut headers: HeaderMap,
        body: Option<bytes::Bytes>,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let from_client = headers.remove(header::AUTHORIZATION);
        if let Some(value) = self
            .auth
            .authorization(&self.http, from_client.as_ref())
            .await?
        {
            headers.insert(header::AUTHORIZATION, value);
        }
        let mut request = self.http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(e, self.timeout_ms))?;
        Ok(UpstreamAnswer {
            status: answer.status(),
            headers: answer.headers().clone(),
            body: answer,
        })
    }

    /// One call whose answer is read whole, up to the body limit; `query` is percent-encoded
    /// here. Of `headers`, only those a catalog call carries are sent.
    pub async fn call(
        &self,
        method: Method,
        path: &UpstreamPath,
        query: &[(&str, &str)],
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let remote = self
            .remote_config(headers.get(header::AUTHORIZATION))
            .await?;
        let mut url = self.endpoint(&path.with_prefix(remote.prefix()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut sent = HeaderMap::new();
        for name in [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
        ] {
            if let Some(value) = headers.get(&name) {
                sent.insert(name, value.clone());
            }
        }
        let mut answer = self.send(method, url, sent, body).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = answer
            .body
            .chunk()
            .await
            .map_err(|e| UpstreamError::from_reqwest(e, self.timeout_ms))?
        {
            if bytes.len() + chunk.len() > self.max_body_bytes {
                return Err(UpstreamError::InvalidAnswer(format!(
                    "its answer is larger than {} bytes",
                    self.max_body_bytes
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((answer.status, answer.headers, Bytes::from(bytes)))
    }
}
