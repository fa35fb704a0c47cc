//! docker-compose.yml and the Dockerfile cannot be run here (no Docker engine), so this checks them
//! against floe itself: the services and their wiring, each floe service's configuration parsed and
//! validated as floe's settings, the replication rule's token and bucket matching the replica's, and
//! the image's build stages and non-root user.

use std::collections::BTreeSet;

use floe::config::Settings;
use serde_yaml::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml");
    let mut value: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    value.apply_merge().expect("merge keys resolve");
    // Merge keys nested in services resolve too.
    if let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, service) in services.iter_mut() {
            service.apply_merge().expect("service merge keys resolve");
        }
    }
    value
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service {name} is missing"))
}

/// The floe settings a service mounts, parsed and validated by floe itself.
fn floe_settings(compose: &Value, name: &str) -> Settings {
    let config = service(compose, name)["configs"][0]["source"]
        .as_str()
        .expect("a config source");
    let content = compose["configs"][config]["content"]
        .as_str()
        .expect("inline config content");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("floe.toml");
    std::fs::write(&path, content).unwrap();
    Settings::load(Some(&path)).unwrap_or_else(|e| panic!("{name}'s config: {e}"))
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .host_str()
        .unwrap_or_default()
        .to_string()
}

fn depends_healthy(compose: &Value, name: &str, on: &str) {
    assert_eq!(
        service(compose, name)["depends_on"][on]["condition"],
        Value::from("service_healthy"),
        "{name} must wait for {on} to be healthy"
    );
}

#[test]
fn compose_services_are_wired_to_each_other_and_to_floe_settings() {
    let compose = compose();
    let names: BTreeSet<&str> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "postgres-primary",
        "postgres-replica",
        "minio",
        "minio-buckets",
        "floe-primary",
        "floe-replica",
        "replication-rule",
        "sample-writer",
    ] {
        assert!(names.contains(expected), "missing service {expected}");
    }
    for long_running in [
        "postgres-primary",
        "postgres-replica",
        "minio",
        "floe-primary",
        "floe-replica",
    ] {
        let s = service(&compose, long_running);
        assert_eq!(
            s["restart"],
            Value::from("unless-stopped"),
            "{long_running}"
        );
        assert!(
            s["healthcheck"]["test"].is_sequence(),
            "{long_running} has no health check"
        );
    }
    for one_shot in ["minio-buckets", "replication-rule", "sample-writer"] {
        assert_eq!(
            service(&compose, one_shot)["restart"],
            Value::from("no"),
            "{one_shot}"
        );
    }
    let buckets = service(&compose, "minio-buckets")["command"][0]
        .as_str()
        .unwrap()
        .to_string();

    for (name, region, host_port) in [
        ("floe-primary", "primary", 8181),
        ("floe-replica", "replica", 8182),
    ] {
        let settings = floe_settings(&compose, name);
        assert_eq!(settings.region, region);
        // Reachable from the other containers and, through the port mapping, from the host.
        assert!(
            settings.listen.ip().is_unspecified(),
            "{name} must listen beyond loopback"
        );
        let mapping = format!("{host_port}:{}", settings.listen.port());
        assert_eq!(
            service(&compose, name)["ports"][0],
            Value::from(mapping),
            "{name}"
        );
        let db_host = host_of(settings.database_url.as_ref().unwrap().expose());
        assert!(
            names.contains(db_host.as_str()),
            "{name}: no service {db_host}"
        );
        depends_healthy(&compose, name, &db_host);
        let wh = &settings.warehouses[0];
        let s3 = wh.s3.as_ref().expect("an S3 warehouse");
        let s3_host = host_of(s3.endpoint.as_deref().unwrap());
        assert!(
            names.contains(s3_host.as_str()),
            "{name}: no service {s3_host}"
        );
        let bucket = wh
            .root
            .strip_prefix("s3://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        assert!(
            buckets.contains(&format!("local/{bucket}")),
            "bucket {bucket} is never created"
        );
        assert!(wh.vend_credentials);
        assert_eq!(
            host_of(wh.client_s3_endpoint.as_deref().unwrap()),
            "localhost"
        );
    }

    // The rule job registers the replica with the token the replica accepts and its bucket.
    let replica = floe_settings(&compose, "floe-replica");
    let rule = service(&compose, "replication-rule")["command"][0]
        .as_str()
        .unwrap()
        .to_string();
    let token = &replica.replication.accept[0];
    assert_eq!(token.region, "primary");
    assert!(
        rule.contains(&format!("\"credential\": \"{}\"", token.token.expose())),
        "{rule}"
    );
    assert!(rule.contains(&format!(
        "\"storage-root\": \"{}\"",
        replica.warehouses[0].root
    )));
    assert!(rule.contains("\"base-url\": \"http://floe-replica:8181\""));
    depends_healthy(&compose, "replication-rule", "floe-primary");
    depends_healthy(&compose, "replication-rule", "floe-replica");
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let stages = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER instruction");
    assert!(!matches!(user.trim(), "root" | "0"), "runs as {user}");
    assert!(
        lines.iter().any(|l| l.starts_with("COPY migrations")),
        "migrations are compiled in"
    );
    assert!(lines.contains(&"EXPOSE 8181"));
    let ignore = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore"))
        .expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
