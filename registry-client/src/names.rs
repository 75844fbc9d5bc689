//! Checks on the names the caller hands in (repository, tag, digest) before they become
//! URL paths, and digest computation for verifying what comes back. A name that passes
//! here cannot escape its path segment (no `..`, no `?`, no `%`).

use sha2::{Digest as _, Sha256, Sha512};

use crate::ClientError;

/// Longest repository name accepted (Harbor's and distribution's limit).
const MAX_REPOSITORY: usize = 255;

/// Checks a repository name against the OCI distribution grammar:
/// `component(/component)*`, component `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(crate) fn check_repository(name: &str) -> Result<(), ClientError> {
    let invalid = || ClientError::Invalid(format!("invalid repository name {name:?}"));
    if name.is_empty() || name.len() > MAX_REPOSITORY {
        return Err(invalid());
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(invalid());
        }
    }
    Ok(())
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let run = &component[start..i];
        let ok = run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), ClientError> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::Invalid(format!("invalid tag {tag:?}")))
    }
}

/// A digest the client can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Checks a digest (`sha256:<64 hex>` or `sha512:<128 hex>`, lowercase) and returns its
/// algorithm. Other algorithms are refused: the client could not verify the content.
pub(crate) fn check_digest(digest: &str) -> Result<Algorithm, ClientError> {
    let invalid = || ClientError::Invalid(format!("invalid or unsupported digest {digest:?}"));
    let (algorithm, hex) = digest.split_once(':').ok_or_else(invalid)?;
    let algorithm = match algorithm {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return Err(invalid()),
    };
    let ok = hex.len() == algorithm.hex_len()
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(algorithm)
    } else {
        Err(invalid())
    }
}

/// A manifest reference: a digest when it has a `:`, else a tag.
pub(crate) fn check_reference(reference: &str) -> Result<Option<Algorithm>, ClientError> {
    if reference.contains(':') {
        check_digest(reference).map(Some)
    } else {
        check_tag(reference).map(|()| None)
    }
}

/// Incremental hashing for either algorithm.
pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// `algorithm:hex`.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => {
                format!("{}:{}", Algorithm::Sha256.name(), hex::encode(h.finalize()))
            }
            Hasher::Sha512(h) => {
                format!("{}:{}", Algorithm::Sha512.name(), hex::encode(h.finalize()))
            }
        }
    }
}

/// The digest of `data` with `algorithm`.
pub(crate) fn digest_of(algorithm: Algorithm, data: &[u8]) -> String {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(data);
    hasher.finish()
}

/// The `sha256:<hex>` digest of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    digest_of(Algorithm::Sha256, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["a", "library/alpine", "a.b_c__d---e/f0", "x/y/z", "0"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a/../b", "..", "a..b", "a___b", "-a", "a-", "a?b",
            "a%2fb", "a b", "a._b",
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_repository(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_and_digests() {
        assert!(check_tag("v1.0_rc-1").is_ok());
        assert!(check_tag("_x").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", "a?", &"a".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        let d = sha256_digest(b"hello");
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(check_digest(&d), Ok(Algorithm::Sha256));
        assert_eq!(check_reference(&d), Ok(Some(Algorithm::Sha256)));
        assert_eq!(check_reference("latest"), Ok(None));
        for bad in [
            "sha256:abc",
            "md5:00",
            "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            "sha256",
            ":",
        ] {
            assert!(check_digest(bad).is_err(), "{bad}");
        }
        let d512 = digest_of(Algorithm::Sha512, b"x");
        assert_eq!(check_digest(&d512), Ok(Algorithm::Sha512));
    }
}
