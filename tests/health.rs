//! Health probes: `/health/live` while floe serves, `/health/ready` only with its database
//! reachable and migrated; both open without credentials.

mod common;

use common::TestFloe;
use floe::auth::Role;
use floe::config::TokenSettings;

#[tokio::test]
async fn readiness_follows_the_database_and_its_migrations() {
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, dir.path());
    settings.auth.tokens = vec![TokenSettings {
        principal: "etl".to_string(),
        token: "a-token-of-16-or-more-chars".into(),
        roles: vec![Role::Writer],
        warehouses: None,
    }];
    let floe = TestFloe::start_with(settings, dir).await;
    // Credentials guard the catalog, not the probes.
    floe.get("/v1/config").await.expect(401);
    let live = floe.get("/health/live").await.expect(200);
    assert_eq!(live["status"], "live");
    let ready = floe.get("/health/ready").await.expect(200);
    assert_eq!(ready["status"], "ready");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();
    let behind = floe.get("/health/ready").await;
    assert_eq!(behind.error_type(), "ServiceUnavailableException");
    let reason = behind.expect(503)["error"]["message"].to_string();
    assert!(reason.contains(&newest.to_string()), "{reason}");
    sqlx::query("UPDATE _sqlx_migrations SET success = true WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();
    floe.get("/health/ready").await.expect(200);

    // The database gone: not ready, and still live.
    let name = url::Url::parse(&url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let admin_url = url.replace(&format!("/{name}"), "/postgres");
    pool.close().await;
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let gone = floe.get("/health/ready").await.expect(503);
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{gone}"
    );
    floe.get("/health/live").await.expect(200);
    floe.server.stop().await;
}
