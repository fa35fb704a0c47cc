//! Who may do what: an auth matrix generated from the router's own route list (so a new route is
//! in it the moment it exists), floe's token endpoint, OpenID Connect JWTs against a real JWKS over
//! HTTP, and the audit trail of refusals and management actions.

mod common;

use std::collections::BTreeMap;

use common::TestFloe;
use common::jwt::{TestIssuer, other_key};
use floe::auth::{Access, Role};
use floe::config::{
    AcceptedPeer, OAuthClientSettings, OAuthSettings, TokenSettings, WarehouseSettings,
};
use floe::http::routes::RouteSpec;
use reqwest::Method;
use serde_json::{Value, json};

const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";
const ADMIN: &str = "admin-token-01234567890";
const OTHER_WAREHOUSE_WRITER: &str = "other-writer-token-01234";
const PEER: &str = "peer-token-src-0123456789";
const OTHER_PEER: &str = "peer-token-evil-012345678";
const CLIENT_SECRET: &str = "client-secret-0123456789";

fn token(
    principal: &str,
    token: &str,
    roles: &[Role],
    warehouses: Option<&[&str]>,
) -> TokenSettings {
    TokenSettings {
        principal: principal.to_string(),
        token: token.into(),
        roles: roles.to_vec(),
        warehouses: warehouses.map(|w| w.iter().map(|s| s.to_string()).collect()),
    }
}

/// floe with two warehouses, every kind of credential, and the JWT issuer it trusts.
async fn secured_floe(issuer: &TestIssuer) -> TestFloe {
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, &dir.path().join("wh"));
    settings.warehouses.push(WarehouseSettings::builtin(
        "other",
        format!("file://{}", dir.path().join("other").display()),
    ));
    settings.auth.tokens = vec![
        token("alice-reader", READER, &[Role::Reader], None),
        token("bob-writer", WRITER, &[Role::Writer], None),
        token("carol-admin", ADMIN, &[Role::Admin], None),
        token(
            "dave-other",
            OTHER_WAREHOUSE_WRITER,
            &[Role::Writer],
            Some(&["other"]),
        ),
    ];
    settings.auth.oidc = vec![issuer.settings()];
    settings.auth.oauth = Some(OAuthSettings {
        signing_key: "signing-key-for-tests-0123456789abcdef".into(),
        token_lifetime_seconds: 600,
        clients: vec![OAuthClientSettings {
            client_id: "spark-etl".to_string(),
            client_secret: CLIENT_SECRET.into(),
            principal: None,
            roles: vec![Role::Writer],
            warehouses: None,
        }],
    });
    settings.replication.accept = vec![
        AcceptedPeer {
            region: "src".to_string(),
            token: PEER.into(),
        },
        AcceptedPeer {
            region: "evil".to_string(),
            token: OTHER_PEER.into(),
        },
    ];
    TestFloe::start_with(settings, dir).await
}

async fn call(
    floe: &TestFloe,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Body>,
) -> (u16, Value) {
    let mut request = floe.http.request(method, floe.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request = match body {
        Some(Body::Json(value)) => request.json(&value),
        Some(Body::Form(form)) => request.form(&form),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

enum Body {
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// A concrete request to a declared route, reaching real objects (`wh.ns.t`).
fn request_for(spec: &RouteSpec) -> (String, Option<Body>) {
    let mut path = spec
        .path
        .replace("{prefix}", "wh")
        .replace("{warehouse}", "wh")
        .replace("{namespace}", "ns")
        .replace("{table}", "t")
        .replace("{region}", "peer1")
        .replace("{rule_id}", "0191c1f4-0000-7000-8000-000000000000");
    if spec.path == "/v1/config" {
        path.push_str("?warehouse=wh");
    }
    let body = match (&spec.method, spec.access) {
        (_, Access::Public) => Some(Body::Form(vec![(
            "grant_type",
            "client_credentials".to_string(),
        )])),
        (_, Access::Peer) if spec.path == floe::contract::peer_protocol::HANDOVER_PATH => {
            Some(Body::Json(json!({ "type": "begin",
                "table-id": "0191c1f4-0000-7000-8000-000000000001", "epoch": 1,
                "lasting-ms": 1000 })))
        }
        (_, Access::Peer) => Some(Body::Json(json!({
            "source-region": "src", "origin-region": "src",
            "source-table-id": "0191c1f4-0000-7000-8000-000000000001",
            "warehouse": "wh", "namespace": ["ns"], "name": "t", "generation": 1, "lease-token": 1,
            "from": null, "to": { "version": 1, "step": 0 },
            "action": { "type": "orphan" } }))),
        (&Method::POST | &Method::PUT, _) => Some(Body::Json(json!({}))),
        _ => None,
    };
    (path, body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden,
}

/// Who a caller is in the matrix, and what each kind of route should answer it.
struct Caller {
    name: &'static str,
    bearer: Option<String>,
    expect: fn(Access) -> Expect,
}

fn catalog_reads_only(access: Access) -> Expect {
    match access {
        Access::Public | Access::Catalog(Role::Reader) => Expect::Allowed,
        _ => Expect::Forbidden,
    }
}

fn catalog_only(access: Access) -> Expect {
    match access {
        Access::Public | Access::Catalog(_) => Expect::Allowed,
        _ => Expect::Forbidden,
    }
}

fn all_but_peer(access: Access) -> Expect {
    match access {
        Access::Peer => Expect::Forbidden,
        _ => Expect::Allowed,
    }
}

fn peer_only(access: Access) -> Expect {
    match access {
        Access::Public | Access::Peer => Expect::Allowed,
        _ => Expect::Forbidden,
    }
}

fn nothing_but_public(access: Access) -> Expect {
    match access {
        Access::Public => Expect::Allowed,
        _ => Expect::Forbidden,
    }
}

fn unauthenticated(access: Access) -> Expect {
    match access {
        Access::Public => Expect::Allowed,
        _ => Expect::Unauthorized,
    }
}

async fn oauth_token(floe: &TestFloe) -> String {
    let form = vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_id", "spark-etl".to_string()),
        ("client_secret", CLIENT_SECRET.to_string()),
        ("scope", "catalog".to_string()),
    ];
    let (status, body) = call(
        floe,
        Method::POST,
        "/v1/oauth/tokens",
        None,
        Some(Body::Form(form)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert!(
        body["expires_in"]
            .as_u64()
            .is_some_and(|s| s > 0 && s <= 600)
    );
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_route_refuses_whoever_lacks_its_role() {
    let issuer = TestIssuer::start().await;
    let floe = secured_floe(&issuer).await;
    let admin = Some(ADMIN);
    for (path, body) in [
        ("/v1/wh/namespaces", json!({ "namespace": ["ns"] })),
        (
            "/v1/wh/namespaces/ns/tables",
            json!({ "name": "t", "schema": common::simple_schema() }),
        ),
    ] {
        let (status, reply) = call(&floe, Method::POST, path, admin, Some(Body::Json(body))).await;
        assert_eq!(status, 200, "{reply}");
    }

    let expired = {
        let mut claims = issuer.claims("erin", &["admin"]);
        claims["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
        TestIssuer::sign(&claims, &common::jwt::issuer_key())
    };
    let unknown_issuer = {
        let mut claims = issuer.claims("frank", &["admin"]);
        claims["iss"] = json!("https://idp.elsewhere.example");
        TestIssuer::sign(&claims, &common::jwt::issuer_key())
    };
    let bad_signature = TestIssuer::sign(&issuer.claims("grace", &["admin"]), &other_key());
    let callers = vec![
        Caller {
            name: "no token",
            bearer: None,
            expect: unauthenticated,
        },
        Caller {
            name: "unknown token",
            bearer: Some("not-a-token-of-this-floe".into()),
            expect: unauthenticated,
        },
        Caller {
            name: "reader",
            bearer: Some(READER.into()),
            expect: catalog_reads_only,
        },
        Caller {
            name: "writer",
            bearer: Some(WRITER.into()),
            expect: catalog_only,
        },
        Caller {
            name: "admin",
            bearer: Some(ADMIN.into()),
            expect: all_but_peer,
        },
        Caller {
            name: "writer of another warehouse",
            bearer: Some(OTHER_WAREHOUSE_WRITER.into()),
            expect: nothing_but_public,
        },
        Caller {
            name: "peer",
            bearer: Some(PEER.into()),
            expect: peer_only,
        },
        // Its token is region `evil`'s, the change claims to come from `src`.
        Caller {
            name: "peer of another region",
            bearer: Some(OTHER_PEER.into()),
            expect: nothing_but_public,
        },
        Caller {
            name: "JWT reader of wh",
            bearer: Some(issuer.token("heidi", &["reader:wh"])),
            expect: catalog_reads_only,
        },
        Caller {
            name: "JWT admin",
            bearer: Some(issuer.token("ivan", &["admin"])),
            expect: all_but_peer,
        },
        Caller {
            name: "JWT without roles",
            bearer: Some(issuer.token("judy", &[])),
            expect: nothing_but_public,
        },
        Caller {
            name: "expired JWT",
            bearer: Some(expired),
            expect: unauthenticated,
        },
        Caller {
            name: "JWT of an unknown issuer",
            bearer: Some(unknown_issuer),
            expect: unauthenticated,
        },
        Caller {
            name: "JWT with a bad signature",
            bearer: Some(bad_signature),
            expect: unauthenticated,
        },
        Caller {
            name: "floe-issued token (writer)",
            bearer: Some(oauth_token(&floe).await),
            expect: catalog_only,
        },
    ];

    let routes = floe::http::route_specs();
    for access in [
        Access::Public,
        Access::Catalog(Role::Reader),
        Access::Catalog(Role::Writer),
        Access::Admin,
        Access::Peer,
    ] {
        assert!(
            routes.iter().any(|r| r.access == access),
            "no route needs {access:?}"
        );
    }
    let mut refusals: BTreeMap<(String, u16), usize> = BTreeMap::new();
    // Management actions that passed the guard, by action and status: each must be in the trail.
    let mut actions: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for caller in &callers {
        for spec in &routes {
            let (path, body) = request_for(spec);
            let (status, reply) = call(
                &floe,
                spec.method.clone(),
                &path,
                caller.bearer.as_deref(),
                body,
            )
            .await;
            // Asking for promotions claims nothing: a peer of any region is answered, about
            // its own region's tables only (none here).
            let own_promotions = spec.path == floe::contract::peer_protocol::PROMOTIONS_PATH
                && caller.name == "peer of another region";
            // Any peer may ask for a handover; only of a table replicated to it (tests/failover.rs),
            // and this one does not exist.
            let any_peer_handover = spec.path == floe::contract::peer_protocol::HANDOVER_PATH
                && caller.name == "peer of another region";
            if any_peer_handover {
                assert_eq!(status, 404, "{} on {}: {reply}", caller.name, spec.path);
            }
            let expected = if own_promotions || any_peer_handover {
                Expect::Allowed
            } else {
                (caller.expect)(spec.access)
            };
            let what = format!(
                "{} on {} {} ({:?}): {status} {reply}",
                caller.name, spec.method, spec.path, spec.access
            );
            if own_promotions {
                assert_eq!(reply, serde_json::json!({ "promotions": [] }), "{what}");
            }
            match expected {
                Expect::Allowed => assert!(!matches!(status, 401 | 403), "refused: {what}"),
                // A HEAD answer has no body to carry the ErrorModel.
                Expect::Unauthorized => {
                    assert_eq!(status, 401, "{what}");
                    if spec.method != Method::HEAD {
                        assert_eq!(reply["error"]["type"], "NotAuthorizedException", "{what}");
                    }
                }
                Expect::Forbidden => {
                    assert_eq!(status, 403, "{what}");
                    if spec.method != Method::HEAD {
                        assert_eq!(reply["error"]["type"], "ForbiddenException", "{what}");
                        assert!(
                            reply["error"]["message"]
                                .as_str()
                                .is_some_and(|m| !m.is_empty()),
                            "{what}"
                        );
                    }
                }
            }
            if expected != Expect::Allowed {
                *refusals
                    .entry((spec.action.to_string(), status))
                    .or_default() += 1;
            } else if spec.access == Access::Admin && spec.method != Method::GET {
                *actions
                    .entry((spec.action.to_string(), status))
                    .or_default() += 1;
            }
        }
    }

    // Every refusal of the run is in the audit trail, with its route's action and status, and so
    // is every management action.
    let mut recorded: BTreeMap<(String, u16), usize> = BTreeMap::new();
    let mut recorded_actions: BTreeMap<(String, u16), usize> = BTreeMap::new();
    let mut after = 0;
    loop {
        let (status, page) = call(
            &floe,
            Method::GET,
            &format!("/management/v1/audit?after={after}&limit=1000"),
            admin,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for event in events {
            if event["outcome"] == "refused" {
                let key = (
                    event["action"].as_str().unwrap().to_string(),
                    event["status"].as_u64().unwrap() as u16,
                );
                *recorded.entry(key).or_default() += 1;
                assert!(
                    event["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "{event}"
                );
                for secret in [READER, WRITER, ADMIN, PEER, OTHER_PEER, CLIENT_SECRET] {
                    assert!(
                        !event.to_string().contains(secret),
                        "the audit trail shows a secret: {event}"
                    );
                }
            } else {
                assert!(
                    ["carol-admin", "ivan"].contains(&event["principal"].as_str().unwrap()),
                    "{event}"
                );
                let key = (
                    event["action"].as_str().unwrap().to_string(),
                    event["status"].as_u64().unwrap() as u16,
                );
                *recorded_actions.entry(key).or_default() += 1;
            }
        }
        after = page["next-after"].as_i64().unwrap();
    }
    assert_eq!(recorded, refusals);
    assert_eq!(recorded_actions, actions);
    assert!(
        actions
            .keys()
            .any(|(action, _)| action == "replication.resync"),
        "{actions:?}"
    );
}

/// The token endpoint: client credentials for a configured client, a refresh by token exchange,
/// and OAuth errors (not ErrorModels, as the spec defines for this endpoint) for everything else.
#[tokio::test]
async fn floe_issues_tokens_to_configured_clients_only() {
    let issuer = TestIssuer::start().await;
    let floe = secured_floe(&issuer).await;
    let token = oauth_token(&floe).await;
    let (status, _) = call(
        &floe,
        Method::GET,
        "/v1/config?warehouse=wh",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, created) = call(
        &floe,
        Method::POST,
        "/v1/wh/namespaces",
        Some(&token),
        Some(Body::Json(json!({"namespace": ["by_client"]}))),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let (_, log) = call(&floe, Method::GET, "/management/v1/log", Some(ADMIN), None).await;
    assert_eq!(log["entries"][0]["principal"], "spark-etl");

    // Spark refreshes with a token exchange whose subject is the current token.
    let exchange = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_string(),
        ),
        ("subject_token", token.clone()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token".to_string(),
        ),
    ];
    let (status, refreshed) = call(
        &floe,
        Method::POST,
        "/v1/oauth/tokens",
        Some(&token),
        Some(Body::Form(exchange)),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let fresh = refreshed["access_token"].as_str().unwrap();
    assert_ne!(fresh, token);
    let (status, _) = call(&floe, Method::GET, "/v1/wh/namespaces", Some(fresh), None).await;
    assert_eq!(status, 200);

    for (form, status, code) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "spark-etl"),
                ("client_secret", "wrong-secret-0123456789"),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", CLIENT_SECRET),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials")],
            400,
            "invalid_request",
        ),
        (
            vec![("grant_type", "password"), ("username", "x")],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", "forged.token.value"),
            ],
            400,
            "invalid_grant",
        ),
    ] {
        let form = form.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        let (got, body) = call(
            &floe,
            Method::POST,
            "/v1/oauth/tokens",
            None,
            Some(Body::Form(form)),
        )
        .await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.contains(CLIENT_SECRET))
        );
    }
    // A floe token whose claims were edited (roles raised to admin) no longer verifies.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["admin"]);
    parts[1] = engine.encode(claims.to_string());
    let forged = parts.join(".");
    let (status, body) = call(
        &floe,
        Method::GET,
        "/management/v1/log",
        Some(&forged),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

/// Peers and rules are the admin's, and a peer's URL and storage are checked: the credential never
/// follows a new URL, the URL names only where floe may push, and replica files never land in this
/// region's own warehouses.
#[tokio::test]
async fn peers_cannot_be_hijacked() {
    let issuer = TestIssuer::start().await;
    let floe = secured_floe(&issuer).await;
    let root = |name: &str| format!("file://{}/{name}", floe.warehouse_dir.path().display());
    let peer = |base: &str, credential: Option<&str>, storage: &str| {
        let mut spec = json!({ "region": "peer1", "base-url": base,
            "warehouses": [{ "warehouse": "wh", "storage-root": storage }] });
        if let Some(credential) = credential {
            spec["credential"] = json!(credential);
        }
        Body::Json(spec)
    };
    let put = async |bearer: &str, body: Body| {
        call(
            &floe,
            Method::PUT,
            "/management/v1/peers/peer1",
            Some(bearer),
            Some(body),
        )
        .await
    };
    let elsewhere = format!("file://{}/peer-storage", std::env::temp_dir().display());

    // A writer may not register peers at all.
    let (status, _) = put(
        WRITER,
        peer(
            "http://127.0.0.1:9",
            Some("a-peer-credential-1234"),
            &elsewhere,
        ),
    )
    .await;
    assert_eq!(status, 403);
    let (status, reply) = put(
        ADMIN,
        peer(
            "http://127.0.0.1:9",
            Some("a-peer-credential-1234"),
            &elsewhere,
        ),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["has-credential"], true);
    assert!(!reply.to_string().contains("a-peer-credential-1234"));

    // The same URL keeps the stored credential; a new URL needs it again.
    let (status, reply) = put(ADMIN, peer("http://127.0.0.1:9/", None, &elsewhere)).await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = put(ADMIN, peer("http://attacker.example:80", None, &elsewhere)).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credential again"),
        "{reply}"
    );
    let (_, stored) = call(
        &floe,
        Method::GET,
        "/management/v1/peers/peer1",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(stored["base-url"], "http://127.0.0.1:9/");

    for (base, storage, names) in [
        (
            "http://user:pw@127.0.0.1:9",
            elsewhere.clone(),
            "user or password",
        ),
        ("http://127.0.0.1:9/?next=x", elsewhere.clone(), "query"),
        ("gopher://127.0.0.1:9", elsewhere.clone(), "http"),
        (
            "http://127.0.0.1:9",
            root("wh/ns"),
            "overlaps this region's warehouse `wh`",
        ),
        (
            "http://127.0.0.1:9",
            root("other"),
            "overlaps this region's warehouse `other`",
        ),
        (
            "http://127.0.0.1:9",
            format!("file://{}", floe.warehouse_dir.path().display()),
            "overlaps",
        ),
        (
            "http://127.0.0.1:9",
            format!("{}/../x", root("wh")),
            "climbing",
        ),
    ] {
        let (status, reply) =
            put(ADMIN, peer(base, Some("a-peer-credential-1234"), &storage)).await;
        assert_eq!(status, 400, "{base} {storage}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{base} {storage}: {message}");
    }
    let (_, stored) = call(
        &floe,
        Method::GET,
        "/management/v1/peers/peer1",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        stored["base-url"], "http://127.0.0.1:9/",
        "a refused change changed the peer"
    );

    // Each management action is in the audit trail with its outcome.
    let (_, page) = call(
        &floe,
        Method::GET,
        "/management/v1/audit?limit=1000",
        Some(ADMIN),
        None,
    )
    .await;
    let events: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "peer.put")
        .collect();
    let outcomes: Vec<(&str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        &outcomes[..4],
        [
            ("refused", 403),
            ("succeeded", 200),
            ("succeeded", 200),
            ("failed", 400)
        ]
    );
    assert_eq!(outcomes.len(), 4 + 7);
    assert!(
        events
            .iter()
            .all(|e| e["principal"] != "bob-writer" || e["outcome"] == "refused")
    );
    assert_eq!(events[1]["principal"], "carol-admin");
}

/// With nothing configured under `auth`, floe serves everyone as `anonymous`, so it refuses to
/// listen beyond loopback unless told to.
#[test]
fn anonymous_service_stays_on_loopback_unless_allowed() {
    let mut settings = floe::config::Settings {
        listen: "0.0.0.0:8181".parse().unwrap(),
        ..Default::default()
    };
    let refused = settings.validate().unwrap_err().to_string();
    assert!(refused.contains("allow_anonymous"), "{refused}");
    settings.allow_anonymous = true;
    settings.validate().unwrap();
    settings.allow_anonymous = false;
    settings.auth.tokens = vec![token("p", WRITER, &[Role::Writer], None)];
    settings.validate().unwrap();
    settings.listen = "127.0.0.1:8181".parse().unwrap();
    settings.auth.tokens.clear();
    settings.validate().unwrap();
}

/// A verified token is remembered, but only until it expires: then it is refused like any other.
#[tokio::test]
async fn remembered_tokens_still_expire() {
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, dir.path());
    settings.auth.oauth = Some(OAuthSettings {
        signing_key: "signing-key-for-tests-0123456789abcdef".into(),
        token_lifetime_seconds: 1,
        clients: vec![OAuthClientSettings {
            client_id: "spark-etl".to_string(),
            client_secret: CLIENT_SECRET.into(),
            principal: None,
            roles: vec![Role::Reader],
            warehouses: None,
        }],
    });
    let floe = TestFloe::start_with(settings, dir).await;
    let token = oauth_token(&floe).await;
    for _ in 0..3 {
        let (status, _) = call(&floe, Method::GET, "/v1/wh/namespaces", Some(&token), None).await;
        assert_eq!(status, 200);
    }
    // Past its expiry and the 5 s leeway floe allows its own tokens.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let (status, body) = call(&floe, Method::GET, "/v1/wh/namespaces", Some(&token), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("xpired"),
        "{body}"
    );
}
