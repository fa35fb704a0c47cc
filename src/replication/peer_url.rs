//! Where floe may push: the one check of a peer's base URL, made when an operator registers the
//! peer and again before every push (so narrowing `replication.allowed_peer_hosts` takes effect
//! for peers registered earlier).
//!
//! A base URL is `http` or `https` with a host, and carries no userinfo (a credential travels as
//! the peer's `credential`, never in a URL that is shown and logged), no query and no fragment
//! (the peer endpoint's path is appended to it). With `allowed_peer_hosts`, its host must be one of
//! them: an exact name or address, or `*.example.com` for any host under that domain.

use url::Url;

/// Checks a peer base URL; the error says what is wrong with it.
pub fn check(base_url: &str, allowed_hosts: Option<&[String]>) -> Result<Url, String> {
    let url =
        Url::parse(base_url).map_err(|e| format!("base-url `{base_url}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("base-url `{base_url}` must be http:// or https://"));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("base-url `{base_url}` names no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "base-url must not carry a user or password: give the peer's token as `credential`"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base-url `{base_url}` must not have a query or a fragment"
        ));
    }
    if let Some(allowed) = allowed_hosts
        && !allowed.iter().any(|pattern| host_matches(pattern, host))
    {
        return Err(format!(
            "host `{host}` of base-url is not among replication.allowed_peer_hosts ({})",
            allowed.join(", ")
        ));
    }
    Ok(url)
}

/// Whether two base URLs name the same peer endpoint (scheme, host, port and path, as parsed).
pub fn same_endpoint(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        }
        _ => false,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => {
            pattern.trim_start_matches('[').trim_end_matches(']')
                == host.trim_start_matches('[').trim_end_matches(']')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert!(check("http://replica.example:8181", None).is_ok());
        assert!(check("https://replica.example/floe/", None).is_ok());
        for bad in [
            "ftp://replica.example",
            "http://user:pw@replica.example",
            "http://replica.example/?x=1",
            "http://replica.example/#frag",
            "file:///etc/passwd",
            "not a url",
            "http://",
        ] {
            assert!(check(bad, None).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn allowed_hosts_limit_where_floe_pushes() {
        let allowed = ["replica.example".to_string(), "*.lake.internal".to_string()];
        assert!(check("http://replica.example:8181", Some(&allowed)).is_ok());
        assert!(check("http://eu.lake.internal", Some(&allowed)).is_ok());
        assert!(check("http://lake.internal", Some(&allowed)).is_err());
        assert!(check("http://evillake.internal", Some(&allowed)).is_err());
        assert!(check("http://attacker.example", Some(&allowed)).is_err());
        assert!(check("http://127.0.0.1:9", Some(&allowed)).is_err());
    }

    #[test]
    fn same_endpoint_compares_parsed_urls() {
        assert!(same_endpoint("http://A.example:80/", "http://a.example"));
        assert!(!same_endpoint("http://a.example", "http://b.example"));
        assert!(!same_endpoint(
            "http://a.example:8181",
            "http://a.example:8182"
        ));
    }
}
