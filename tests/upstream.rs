//! Proxy mode: floe in front of an independent Iceberg REST catalog (the Apache Iceberg
//! reference catalog, `common::java_catalog`), and in front of upstreams that misbehave
//! (nothing listening, no answer, answers that are not Iceberg's), served by plain sockets.

mod common;

use std::time::Duration;

use common::TestFloe;
use common::java_catalog::{self, JavaCatalog};
use floe::config::{Backend, UpstreamAuthMode, UpstreamSettings, WarehouseSettings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn upstream_settings(url: &str) -> UpstreamSettings {
    UpstreamSettings {
        url: url.to_string(),
        warehouse: None,
        auth: UpstreamAuthMode::PassThrough,
        token: None,
        token_url: None,
        client_id: None,
        client_secret: None,
        scope: None,
        timeout_ms: 5_000,
    }
}

/// floe with one builtin warehouse `wh` and one upstream warehouse `lake` in front of `upstream`.
async fn floe_in_front_of(upstream: UpstreamSettings, root: &std::path::Path) -> TestFloe {
    let url = common::new_database().await;
    let own = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, own.path());
    let mut lake = WarehouseSettings::builtin("lake", format!("file://{}", root.display()));
    lake.backend = Backend::Upstream;
    lake.upstream = Some(upstream);
    settings.warehouses.push(lake);
    TestFloe::start_with(settings, own).await
}

async fn upstream_get(catalog: &JavaCatalog, path: &str) -> (u16, Value) {
    let answer = reqwest::get(format!("{}{path}", catalog.url))
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Namespaces and tables made, read, renamed and dropped through floe are the upstream's own:
/// the upstream, asked directly, agrees, and its ErrorModels reach the client as it sent them.
#[tokio::test]
async fn catalog_calls_pass_through_to_the_upstream() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_of(upstream_settings(&upstream.url), upstream.warehouse.path()).await;

    let config = floe.get("/v1/config?warehouse=lake").await.expect(200);
    assert_eq!(config["overrides"]["prefix"], "lake", "{config}");
    let endpoints: Vec<&str> = config["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"GET /v1/{prefix}/namespaces/{namespace}/tables/{table}"));
    assert!(
        !endpoints.contains(&"POST /v1/{prefix}/transactions/commit"),
        "commits are not forwarded yet: {endpoints:?}"
    );

    floe.post(
        "/v1/lake/namespaces",
        json!({"namespace": ["sales"], "properties": {"owner": "ana"}}),
    )
    .await
    .expect(200);
    let (status, namespace) = upstream_get(&upstream, "/v1/namespaces/sales").await;
    assert_eq!(status, 200, "{namespace}");
    assert_eq!(namespace["properties"]["owner"], "ana");
    // The builtin warehouse beside it knows nothing of it.
    floe.get("/v1/wh/namespaces/sales").await.expect(404);

    let created = floe
        .post(
            "/v1/lake/namespaces/sales/tables",
            json!({"name": "orders", "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    let location = created["metadata-location"].as_str().unwrap().to_string();
    // The reference catalog spells its file URIs `file:/path`.
    let root = upstream.warehouse.path().to_str().unwrap();
    assert!(
        location.starts_with(&format!("file:{root}/")),
        "{location} is not in the upstream's warehouse {root}"
    );
    let loaded = floe
        .get("/v1/lake/namespaces/sales/tables/orders")
        .await
        .expect(200);
    assert_eq!(loaded["metadata-location"], location.as_str());
    let (status, direct) = upstream_get(&upstream, "/v1/namespaces/sales/tables/orders").await;
    assert_eq!(status, 200);
    assert_eq!(
        direct["metadata"]["table-uuid"],
        loaded["metadata"]["table-uuid"]
    );
    assert_eq!(
        floe.head("/v1/lake/namespaces/sales/tables/orders").await,
        204
    );

    let listed = floe
        .get("/v1/lake/namespaces/sales/tables")
        .await
        .expect(200);
    assert_eq!(
        listed["identifiers"],
        json!([{"namespace": ["sales"], "name": "orders"}])
    );

    let missing = floe.get("/v1/lake/namespaces/sales/tables/nope").await;
    assert_eq!(
        missing.error_type(),
        "NoSuchTableException",
        "{:?}",
        missing.body
    );
    missing.expect(404);

    floe.post(
        "/v1/lake/tables/rename",
        json!({"source": {"namespace": ["sales"], "name": "orders"},
               "destination": {"namespace": ["sales"], "name": "orders_v2"}}),
    )
    .await
    .expect(204);
    assert_eq!(
        upstream_get(&upstream, "/v1/namespaces/sales/tables/orders_v2")
            .await
            .0,
        200
    );
    floe.delete("/v1/lake/namespaces/sales/tables/orders_v2")
        .await
        .expect(204);
    assert_eq!(
        upstream_get(&upstream, "/v1/namespaces/sales/tables/orders_v2")
            .await
            .0,
        404
    );
}

/// Until floe logs the commits it forwards, it refuses them for upstream warehouses (rather
/// than acknowledge a commit its log lacks), and the upstream's table is untouched.
#[tokio::test]
async fn commits_to_an_upstream_warehouse_are_refused_and_change_nothing() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_of(upstream_settings(&upstream.url), upstream.warehouse.path()).await;
    floe.post("/v1/lake/namespaces", json!({"namespace": ["ns"]}))
        .await
        .expect(200);
    let created = floe
        .post(
            "/v1/lake/namespaces/ns/tables",
            json!({"name": "t", "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    let refused = floe
        .post(
            "/v1/lake/namespaces/ns/tables/t",
            json!({"requirements": [], "updates": [{"action": "set-properties", "updates": {"k": "v"}}]}),
        )
        .await;
    assert_eq!(refused.error_type(), "UnsupportedOperationException");
    let message = refused.expect(406)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&upstream.url), "{message}");
    let (_, direct) = upstream_get(&upstream, "/v1/namespaces/ns/tables/t").await;
    assert_eq!(direct["metadata-location"], created["metadata-location"]);
    assert!(
        direct["metadata"]["properties"].get("k").is_none(),
        "{direct}"
    );
}

/// A name that would reach another endpoint of the upstream once decoded is refused by floe.
#[tokio::test]
async fn names_that_would_leave_the_endpoint_are_refused_before_forwarding() {
    let requests = hits_counter().await;
    let floe = floe_in_front_of(
        upstream_settings(&requests.url),
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    // Sent as raw bytes: an HTTP client library would resolve the `%2E%2E` segments itself.
    for path in [
        "/v1/lake/namespaces/%2E%2E/tables/t",
        "/v1/lake/namespaces/ns/tables/%2E%2E",
        "/v1/lake/namespaces/ns%1F..",
        "/v1/lake/namespaces/a%2Fb",
    ] {
        let status = raw_get(&floe.url(""), path).await;
        assert_eq!(status, 400, "GET {path}");
    }
    assert_eq!(requests.count(), 0, "a request reached the upstream");
}

/// An upstream nobody listens at is 503 naming it; once it is up, floe serves it by itself.
#[tokio::test]
async fn an_unreachable_upstream_is_503_naming_it_and_recovers() {
    let port = common::region::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let root = tempfile::tempdir().unwrap();
    let floe = floe_in_front_of(upstream_settings(&url), root.path()).await;
    let down = floe.get("/v1/lake/namespaces").await;
    assert_eq!(down.error_type(), "ServiceUnavailableException");
    let message = down.expect(503)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&url) && message.contains("lake"),
        "{message}"
    );
    let config = floe.get("/v1/config?warehouse=lake").await;
    config.expect(503);

    let Some(_upstream) = java_catalog::start_on(port).await else {
        return;
    };
    floe.get("/v1/config?warehouse=lake").await.expect(200);
    floe.get("/v1/lake/namespaces").await.expect(200);
}

/// No answer in time is 504; an answer that is not an Iceberg ErrorModel is 502; both name the
/// upstream.
#[tokio::test]
async fn a_silent_upstream_is_504_and_a_foreign_answer_502() {
    let silent = raw_server(None).await;
    let mut settings = upstream_settings(&silent.url);
    settings.timeout_ms = 300;
    let floe = floe_in_front_of(settings, tempfile::tempdir().unwrap().path()).await;
    let timed_out = floe.get("/v1/lake/namespaces").await;
    assert_eq!(timed_out.error_type(), "GatewayTimeoutException");
    assert!(
        timed_out.expect(504)["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&silent.url)
    );

    let html = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ncontent-length: 21\r\nconnection: close\r\n\r\n<html>oops</html>\r\n\r\n";
    let foreign = raw_server(Some(html)).await;
    let floe = floe_in_front_of(
        upstream_settings(&foreign.url),
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    let bad = floe.get("/v1/lake/namespaces").await;
    assert_eq!(bad.error_type(), "BadGatewayException");
    let message = bad.expect(502)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&foreign.url) && message.contains("oops"),
        "{message}"
    );
}

/// The client's `Authorization` reaches the upstream in pass-through mode; with `auth = "token"`
/// the configured token does instead, whatever the client sent.
#[tokio::test]
async fn authorization_follows_the_auth_mode() {
    let seen = header_recorder().await;
    let floe = floe_in_front_of(
        upstream_settings(&seen.url),
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    let reply = floe
        .http
        .get(floe.url("/v1/lake/namespaces"))
        .bearer_auth("client-token")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        seen.last("authorization").as_deref(),
        Some("Bearer client-token")
    );

    let mut settings = upstream_settings(&seen.url);
    settings.auth = UpstreamAuthMode::Token;
    settings.token = Some("upstream-token-0123456789".into());
    let floe = floe_in_front_of(settings, tempfile::tempdir().unwrap().path()).await;
    let reply = floe
        .http
        .get(floe.url("/v1/lake/namespaces"))
        .bearer_auth("client-token")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        seen.last("authorization").as_deref(),
        Some("Bearer upstream-token-0123456789")
    );
}

/// The status of a GET of `path` sent as written.
async fn raw_get(base: &str, path: &str) -> u16 {
    let address = base.trim_start_matches("http://").trim_end_matches('/');
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

struct RawServer {
    url: String,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawServer {
    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// The value of `header` in the last request that was not for `/v1/config`.
    fn last(&self, header: &str) -> Option<String> {
        let hits = self.hits.lock().unwrap();
        let request = hits
            .iter()
            .rev()
            .find(|r| !r.starts_with("GET /v1/config"))?;
        request.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(header)
                .then(|| value.trim().to_string())
        })
    }
}

/// A plain-socket HTTP server that records each request's head and answers `answer` (raw), or
/// never answers.
async fn raw_server(answer: Option<&'static str>) -> RawServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                recorded
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_string());
                match answer {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    RawServer { url, hits }
}

const CONFIG_OR_EMPTY_LIST: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\nconnection: close\r\n\r\n{\"namespaces\":[]}";

/// Answers every request with `{"namespaces":[]}` (which also parses as an empty config).
async fn header_recorder() -> RawServer {
    raw_server(Some(CONFIG_OR_EMPTY_LIST)).await
}

async fn hits_counter() -> RawServer {
    raw_server(Some(CONFIG_OR_EMPTY_LIST)).await
}
