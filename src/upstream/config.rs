//! The upstream's `/v1/config`, and floe's own `/v1/config` for an upstream warehouse.
//!
//! Clients must keep talking to floe, so what floe passes on from the upstream's answer is
//! filtered: its `prefix` is replaced by floe's warehouse name and its `uri` is dropped (either
//! would send clients past floe), and the endpoints advertised are those both floe and the
//! upstream serve.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::client::UpstreamAnswer;
use super::errors::UpstreamError;

/// Keys of the upstream's config that are not passed on to clients.
const NOT_PASSED_ON: [&str; 2] = ["prefix", "uri"];

/// The endpoints a server that lists none is taken to serve (Apache Iceberg's
/// `RESTSessionCatalog` default set).
const DEFAULT_ENDPOINTS: [&str; 14] = [
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "POST /v1/{prefix}/transactions/commit",
];

/// A CatalogConfig, as the spec defines it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteConfig {
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
}

impl RemoteConfig {
    pub(super) async fn read(answer: UpstreamAnswer) -> Result<Self, UpstreamError> {
        let status = answer.status;
        let text = answer
            .body
            .text()
            .await
            .map_err(|e| UpstreamError::InvalidAnswer(format!("reading /v1/config: {e}")))?;
        if !status.is_success() {
            return Err(UpstreamError::InvalidAnswer(format!(
                "/v1/config answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text).map_err(|e| {
            UpstreamError::InvalidAnswer(format!("/v1/config is not a CatalogConfig: {e}"))
        })
    }

    /// The prefix the upstream's paths take, if any (`overrides.prefix`, else `defaults.prefix`).
    pub fn prefix(&self) -> Option<&str> {
        self.overrides
            .get("prefix")
            .or_else(|| self.defaults.get("prefix"))
            .map(String::as_str)
            .filter(|prefix| !prefix.is_empty())
    }

    /// Whether the upstream serves `endpoint` ("<VERB> <spec path>"). A HEAD route counts as
    /// served when its GET is, as servers answer HEAD for GET.
    pub fn serves(&self, endpoint: &str) -> bool {
        let listed = |wanted: &str| match &self.endpoints {
            Some(list) => list.iter().any(|e| e == wanted),
            None => DEFAULT_ENDPOINTS.contains(&wanted),
        };
        listed(endpoint)
            || endpoint
                .strip_prefix("HEAD ")
                .is_some_and(|path| listed(&format!("GET {path}")))
    }

    /// floe's `/v1/config` answer for upstream warehouse `warehouse`, advertising those of
    /// `floe_endpoints` that the upstream serves.
    pub fn for_clients(&self, warehouse: &str, floe_endpoints: &[String]) -> RemoteConfig {
        let passed_on = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            map.iter()
                .filter(|(key, _)| !NOT_PASSED_ON.contains(&key.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut overrides = passed_on(&self.overrides);
        overrides.insert("prefix".to_string(), warehouse.to_string());
        RemoteConfig {
            defaults: passed_on(&self.defaults),
            overrides,
            endpoints: Some(
                floe_endpoints
                    .iter()
                    .filter(|endpoint| self.serves(endpoint))
                    .cloned()
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_keep_floes_prefix_and_never_get_the_upstreams_uri() {
        let remote = RemoteConfig {
            defaults: BTreeMap::from([
                ("uri".to_string(), "http://upstream:8181".to_string()),
                ("clients".to_string(), "4".to_string()),
            ]),
            overrides: BTreeMap::from([("prefix".to_string(), "ws-123".to_string())]),
            endpoints: Some(vec![
                "GET /v1/{prefix}/namespaces".to_string(),
                "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}".to_string(),
            ]),
        };
        assert_eq!(remote.prefix(), Some("ws-123"));
        let floe = [
            "GET /v1/{prefix}/namespaces".to_string(),
            "POST /v1/{prefix}/namespaces".to_string(),
            "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}".to_string(),
        ];
        let config = remote.for_clients("lake", &floe);
        assert_eq!(config.overrides["prefix"], "lake");
        assert!(!config.defaults.contains_key("uri"));
        assert_eq!(config.defaults["clients"], "4");
        assert_eq!(
            config.endpoints.unwrap(),
            [
                "GET /v1/{prefix}/namespaces",
                "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}"
            ]
        );
    }

    #[test]
    fn a_server_listing_no_endpoints_serves_the_default_set() {
        let remote = RemoteConfig::default();
        assert_eq!(remote.prefix(), None);
        assert!(remote.serves("POST /v1/{prefix}/transactions/commit"));
        assert!(remote.serves("HEAD /v1/{prefix}/namespaces/{namespace}"));
        assert!(!remote.serves("GET /v1/{prefix}/namespaces/{namespace}/views/{view}"));
    }
}
