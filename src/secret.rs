//! [`Secret`]: a string that never shows itself. Tokens, client secrets, signing keys, S3 secret
//! keys, peer credentials and the database URL are held in it, so no `Debug` output, log line or
//! error message built from a value that holds one can carry the secret: its `Debug` prints
//! `<redacted>`, it has no `Display`, and the text is reached only through [`Secret::expose`],
//! at the few places that must hand it on (a comparison, a request header, a connection).
//!
//! Written here rather than taken from `secrecy`: floe's settings are serialised as well as
//! parsed (figment layers the defaults through serde), which `secrecy` deliberately refuses for
//! plain strings.

use serde::{Deserialize, Serialize};

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2-hunter2");
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            "\"hunter2-hunter2\""
        );
    }
}
