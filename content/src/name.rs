//! Repository names, tags and references, parsed once at the edge.
//!
//! The grammar is the OCI Distribution Spec's: a name is `/`-separated components of
//! lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`; a tag is at most 128
//! characters of `[A-Za-z0-9_.-]` not starting with `.` or `-`. We also cap a name at 255
//! characters, the limit the spec asks registries to tolerate, so that nothing downstream
//! (paths, database columns, log lines) ever meets an unbounded name.

use std::fmt;

use crate::digest::{Digest, DigestError};

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("repository name {0:?} has an empty path component")]
    EmptyComponent(String),
    #[error("repository name component {0:?} must be lower-case letters and digits, separated by '.', '_', '__' or '-'")]
    BadComponent(String),
    #[error("tag {0:?} must be 1 to {MAX_TAG_LEN} characters of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    BadTag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A validated repository name such as `library/nginx`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        if input.is_empty() {
            return Err(NameError::Empty);
        }
        if input.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(input.len()));
        }
        for component in input.split('/') {
            if component.is_empty() {
                return Err(NameError::EmptyComponent(input.to_owned()));
            }
            if !is_valid_component(component) {
                return Err(NameError::BadComponent(component.to_owned()));
            }
        }
        Ok(RepositoryName(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The project a repository belongs to: its first path component.
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, checked by hand to avoid a regex dependency.
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of alphanumerics, at least one.
        let start = i;
        while i < bytes.len() && is_alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator: '.', '_', '__' or one or more '-'.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag such as `1.27-alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let bytes = input.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Tag(input.to_owned()))
        } else {
            Err(NameError::BadTag(input.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        // A tag can never contain ':', a digest always does.
        if input.contains(':') {
            Ok(Reference::Digest(Digest::parse(input)?))
        } else {
            Ok(Reference::Tag(Tag::parse(input)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for name in [
            "a",
            "library/nginx",
            "my-org/sub.team/app_1",
            "a__b/c---d/e.f",
            "0/1/2",
        ] {
            assert!(RepositoryName::parse(name).is_ok(), "{name}");
        }
        assert_eq!(RepositoryName::parse("proj/app").unwrap().project(), "proj");
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(RepositoryName::parse(""), Err(NameError::Empty));
        for name in [
            "Library/nginx",
            "a/../b",
            "..",
            "a//b",
            "/a",
            "a/",
            "a___b",
            "a-",
            "-a",
            "a.-b",
            "a b",
            "a/é",
        ] {
            assert!(RepositoryName::parse(name).is_err(), "{name}");
        }
        let long = format!("a/{}", "b".repeat(254));
        assert_eq!(RepositoryName::parse(&long), Err(NameError::TooLong(256)));
        assert!(RepositoryName::parse(&"b".repeat(255)).is_ok());
    }

    #[test]
    fn tags() {
        for tag in ["latest", "1.27", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(Tag::parse(tag).is_ok(), "{tag}");
        }
        for tag in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129), "ü"] {
            assert!(Tag::parse(tag).is_err(), "{tag}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("md5:abc"),
            Err(NameError::Digest(DigestError::UnsupportedAlgorithm(_)))
        ));
    }
}
