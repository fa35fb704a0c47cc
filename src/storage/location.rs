//! One parsed, normalised form for every file location floe reads, writes, copies or deletes.
//!
//! A [`Location`] is a scheme (`file`, or `s3` with its bucket) and a list of path segments. It is
//! made only by [`Location::parse`] or by joining checked segments onto another location, and every
//! segment has passed [`check_segment`]: never empty, never `.` or `..`, never a form of them that
//! some layer might decode into one (`%2e%2e`, `..%2f`, `..\`, doubly encoded), never a control
//! character. So a location cannot climb: "under" is a prefix test on segments
//! ([`Location::is_under`]), never on strings, and `/wh2` is not under `/wh`.
//!
//! Spellings that name the same file parse to the same value: `file:/p`, `file:///p` and
//! `file://localhost/p`; `s3a://b/k` and `s3://b/k`; a trailing slash or none. [`Location`]'s
//! `Display` is the one spelling floe writes (`file:///p`, `s3://b/k`).

use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// Why a string is not a location floe accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error(
        "unsupported storage location `{0}`: floe serves file:///path and s3://bucket/prefix locations"
    )]
    UnsupportedScheme(String),
    #[error("location `{location}` is not valid: {reason}")]
    Invalid { location: String, reason: String },
}

/// Where a location's files live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// The local filesystem.
    File,
    /// An S3 (or S3-compatible) bucket.
    S3 { bucket: String },
}

/// A checked location: see the module docs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    scheme: Scheme,
    segments: Vec<String>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Scheme::File => f.write_str("file://")?,
            Scheme::S3 { bucket } => write!(f, "s3://{bucket}")?,
        }
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// How many times a segment is percent-decoded when looking for a hidden `.` or `..`: enough for
/// any layer that decodes twice, bounded so a crafted segment cannot make it loop.
const MAX_DECODE_ROUNDS: usize = 4;

/// Checks one path segment (see the module docs). `location` is named in the error.
pub fn check_segment(location: &str, segment: &str) -> Result<(), LocationError> {
    let invalid = |reason: String| LocationError::Invalid {
        location: location.to_string(),
        reason,
    };
    if segment.is_empty() {
        return Err(invalid(
            "it has an empty path segment (`//`); write each directory once".to_string(),
        ));
    }
    if segment.chars().any(char::is_control) {
        return Err(invalid(
            "it contains a control character (NUL, newline, ...)".to_string(),
        ));
    }
    if segment.contains('/') {
        return Err(invalid(format!(
            "`{segment}` is more than one path segment"
        )));
    }
    let mut form = segment.to_string();
    for _ in 0..MAX_DECODE_ROUNDS {
        if form
            .split(['/', '\\'])
            .any(|piece| piece == "." || piece == "..")
        {
            return Err(invalid(format!(
                "its segment `{segment}` is or hides `.` or `..`; locations must name files \
                 directly, without climbing"
            )));
        }
        let decoded = percent_decode_str(&form).decode_utf8_lossy().into_owned();
        if decoded == form {
            break;
        }
        if decoded.chars().any(char::is_control) {
            return Err(invalid(format!(
                "its segment `{segment}` encodes a control character"
            )));
        }
        form = decoded;
    }
    Ok(())
}

impl Location {
    /// Parses `file:///p`, `file:/p`, `file://localhost/p`, `s3://bucket/key` or `s3a://bucket/key`.
    pub fn parse(location: &str) -> Result<Self, LocationError> {
        let invalid = |reason: &str| LocationError::Invalid {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, path) = if let Some(rest) = location.strip_prefix("file:") {
            let path = match rest.strip_prefix("//") {
                // `file:///p` (empty authority) or `file://localhost/p`.
                Some(authority_and_path) => {
                    let slash = authority_and_path.find('/').ok_or_else(|| {
                        invalid("a file location needs an absolute path, e.g. file:///data/lake")
                    })?;
                    let (authority, path) = authority_and_path.split_at(slash);
                    if !(authority.is_empty() || authority.eq_ignore_ascii_case("localhost")) {
                        return Err(invalid(
                            "a file location names no host: write file:///path (this machine)",
                        ));
                    }
                    path
                }
                None => rest,
            };
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file location needs an absolute path, e.g. file:///data/lake",
                ));
            }
            (Scheme::File, &path[1..])
        } else if let Some(rest) = location
            .strip_prefix("s3://")
            .or_else(|| location.strip_prefix("s3a://"))
        {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("an S3 location needs a bucket: s3://bucket/prefix"));
            }
            check_segment(location, bucket)?;
            (
                Scheme::S3 {
                    bucket: bucket.to_string(),
                },
                key,
            )
        } else {
            return Err(LocationError::UnsupportedScheme(location.to_string()));
        };
        // One trailing slash marks a directory; it is not an empty segment.
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segments = Vec::new();
        if !path.is_empty() {
            for segment in path.split('/') {
                check_segment(location, segment)?;
                segments.push(segment.to_string());
            }
        }
        Ok(Self { scheme, segments })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.scheme, Scheme::S3 { .. })
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether this location lies strictly below `root` (same scheme and bucket, `root`'s segments
    /// a proper prefix of this one's).
    pub fn is_under(&self, root: &Location) -> bool {
        self.segments.len() > root.segments.len() && self.is_at_or_under(root)
    }

    /// Whether this location is `root` or lies below it.
    pub fn is_at_or_under(&self, root: &Location) -> bool {
        self.scheme == root.scheme && self.segments.starts_with(&root.segments)
    }

    /// The segments below `root`, when this location is at or under it.
    pub fn relative_to(&self, root: &Location) -> Option<&[String]> {
        self.is_at_or_under(root)
            .then(|| &self.segments[root.segments.len()..])
    }

    /// This location with one more segment, checked like a parsed one.
    pub fn join(&self, segment: &str) -> Result<Self, LocationError> {
        check_segment(&format!("{self}/{segment}"), segment)?;
        let mut joined = self.clone();
        joined.segments.push(segment.to_string());
        Ok(joined)
    }

    /// This location with each of `segments` appended in order.
    pub fn join_all<S: AsRef<str>>(&self, segments: &[S]) -> Result<Self, LocationError> {
        segments
            .iter()
            .try_fold(self.clone(), |location, s| location.join(s.as_ref()))
    }

    /// The same path below `to` that this location has below `from` (`from` itself maps to `to`).
    pub fn rebase(&self, from: &Location, to: &Location) -> Option<Self> {
        let relative = self.relative_to(from)?;
        let mut rebased = to.clone();
        rebased.segments.extend(relative.iter().cloned());
        Some(rebased)
    }

    /// The directory holding this file; `None` at the top of a filesystem or bucket.
    pub fn parent(&self) -> Option<Self> {
        let mut parent = self.clone();
        parent.segments.pop()?;
        Some(parent)
    }

    /// The last segment (the file's name); `None` at the top.
    pub fn file_name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The bucket and key of an S3 location.
    pub fn s3_bucket_and_key(&self) -> Option<(&str, String)> {
        match &self.scheme {
            Scheme::S3 { bucket } => Some((bucket, self.segments.join("/"))),
            Scheme::File => None,
        }
    }

    /// The absolute path of a local location.
    pub fn local_path(&self) -> Option<PathBuf> {
        match self.scheme {
            Scheme::File => Some(PathBuf::from(format!("/{}", self.segments.join("/")))),
            Scheme::S3 { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn spellings_of_one_file_parse_to_one_location() {
        let canonical = loc("file:///wh/ns/t");
        for spelling in [
            "file:/wh/ns/t",
            "file://localhost/wh/ns/t",
            "file:///wh/ns/t/",
        ] {
            assert_eq!(loc(spelling), canonical, "{spelling}");
        }
        assert_eq!(canonical.to_string(), "file:///wh/ns/t");
        assert_eq!(loc("s3a://b/wh/x"), loc("s3://b/wh/x"));
        assert_eq!(loc("s3a://b/wh/x").to_string(), "s3://b/wh/x");
        assert_eq!(loc("s3://b").to_string(), "s3://b/");
    }

    #[test]
    fn climbing_and_hidden_climbing_are_refused() {
        for bad in [
            "file:///wh/../etc/passwd",
            "file:///wh/./x",
            "file:///wh//x",
            "file:///wh/%2e%2e/x",
            "file:///wh/%2E%2e/x",
            "file:///wh/..%2fx",
            "file:///wh/..%5cx",
            "file:///wh/..\\x",
            "file:///wh/a\\..\\..\\x",
            "file:///wh/%252e%252e/x",
            "file:///wh/x%00y",
            "file:///wh/x\u{0}y",
            "s3://bucket/wh/../other",
            "s3://../wh",
            "s3:///wh",
            "file://host/wh",
            "file:relative/wh",
            "wh/x",
            "/wh/x",
            "hdfs://nn/wh",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad} accepted");
        }
        // Dots inside names, and encoded characters that are not dots, are names like any other.
        for good in [
            "file:///wh/a..b/.hidden/x.parquet",
            "file:///wh/name=a%2Fb/x",
            "s3://b/wh/ts=2024-01-01%2000%3A00/x",
        ] {
            loc(good);
        }
    }

    #[test]
    fn under_is_decided_segment_by_segment() {
        let root = loc("file:///wh");
        assert!(loc("file:/wh/ns/t/data/a.parquet").is_under(&root));
        assert!(loc("file:///wh/ns").is_under(&loc("file:/wh/")));
        assert!(!loc("file:///wh2/t").is_under(&root));
        assert!(!loc("file:///wh").is_under(&root));
        assert!(loc("file:///wh").is_at_or_under(&root));
        assert!(loc("s3://lake/wh/t/x").is_under(&loc("s3://lake/wh")));
        assert!(!loc("s3://lake/wh-other/x").is_under(&loc("s3://lake/wh")));
        assert!(!loc("s3://other/wh/x").is_under(&loc("s3://lake/wh")));
        assert!(!loc("s3://lake/wh/x").is_under(&loc("file:///lake/wh")));
        assert!(loc("s3a://lake/wh/t/x").is_under(&loc("s3://lake/wh")));
    }

    #[test]
    fn joins_and_rebases_keep_the_checks() {
        let root = loc("s3://b/wh");
        assert_eq!(root.join("ns").unwrap().to_string(), "s3://b/wh/ns");
        assert!(root.join("..").is_err());
        assert!(root.join("a/b").is_err(), "one segment at a time");
        let file = loc("file:///a/t/data/x.parquet");
        let rebased = file.rebase(&loc("file:///a/t"), &root).unwrap();
        assert_eq!(rebased.to_string(), "s3://b/wh/data/x.parquet");
        assert!(file.rebase(&loc("file:///a/t2"), &root).is_none());
    }
}
