//! Registry bearer tokens: ES256-signed JWTs in the shape of Docker's token
//! specification (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `access`).
//!
//! The signing key is generated on first start and kept in a PEM file that every
//! gateway and worker of an installation shares; verification needs only that key, not
//! the database, so checking a token costs no round trip.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use jwt_simple::prelude::*;

use crate::password::generate_secret;
use crate::scope::ResourceAccess;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the token signing key at {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the token signing key at {path} is not a P-256 private key in PEM: {reason}")]
    KeyInvalid { path: String, reason: String },
    #[error("cannot sign token: {0}")]
    Sign(String),
    /// The token is malformed, signed by another key, expired, not yet valid, or meant
    /// for another service or issuer. The reason is for logs and error messages.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The claims Berth adds to the registered ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccessClaims {
    #[serde(default)]
    access: Vec<ResourceAccess>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The principal's name (`sub`), for the audit log.
    pub subject: String,
    pub access: Vec<ResourceAccess>,
}

impl VerifiedToken {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| a.allows(kind, name, action))
    }
}

/// Signs and verifies tokens for one issuer.
pub struct TokenKeys {
    key: ES256KeyPair,
    public: ES256PublicKey,
    issuer: String,
    /// Tokens whose signature was already checked, with their expiry. An ES256
    /// verification costs about as much as serving a cached manifest; a client reuses
    /// one token for every request of a push or pull, so each process checks each
    /// token's signature once and afterwards only its expiry and audience.
    verified: Mutex<HashMap<String, CachedToken>>,
}

#[derive(Clone)]
struct CachedToken {
    audience: String,
    /// Unix seconds.
    expires_at: u64,
    token: VerifiedToken,
}

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most verified tokens remembered per process; beyond it expired ones are dropped,
/// and if that is not enough, all of them (they are re-verified on next use).
const VERIFIED_CACHE_MAX: usize = 20_000;

impl TokenKeys {
    /// Reads the key at `path`, or generates one there when the file does not exist.
    /// Several processes starting at once agree on one key: the file is written under a
    /// temporary name and hard-linked into place, which fails if another process won.
    pub fn load_or_generate(path: &Path, issuer: &str) -> Result<TokenKeys, TokenError> {
        let key_file_error = |source| TokenError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            let pem = ES256KeyPair::generate()
                .to_pem()
                .map_err(|e| TokenError::Sign(e.to_string()))?;
            crate::secrets::create_file_once(path, pem.as_bytes()).map_err(key_file_error)?;
        }
        let pem = std::fs::read_to_string(path).map_err(key_file_error)?;
        Self::from_pem(&pem, issuer).map_err(|reason| TokenError::KeyInvalid {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_pem(pem: &str, issuer: &str) -> Result<TokenKeys, String> {
        let key = ES256KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        Ok(Self::with_key(key, issuer))
    }

    /// A fresh key, for tests and for tools that need a key nobody else trusts.
    pub fn generate(issuer: &str) -> TokenKeys {
        Self::with_key(ES256KeyPair::generate(), issuer)
    }

    fn with_key(key: ES256KeyPair, issuer: &str) -> TokenKeys {
        // The key id lets a verifier with several keys (rotation) pick the right one.
        let mut public = key.public_key();
        let kid = public.create_key_id().to_owned();
        TokenKeys {
            key: key.with_key_id(&kid),
            public,
            issuer: issuer.to_owned(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token for `subject` granting `access` to `audience` (the registry service
    /// name), valid for `ttl` from now.
    pub fn issue(
        &self,
        subject: &str,
        audience: &str,
        access: Vec<ResourceAccess>,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.issue_at(subject, audience, access, std::time::SystemTime::now(), ttl)
    }

    /// Like [`TokenKeys::issue`], as if issued at `issued_at`: tests use it to make
    /// tokens that have already expired.
    pub fn issue_at(
        &self,
        subject: &str,
        audience: &str,
        access: Vec<ResourceAccess>,
        issued_at: std::time::SystemTime,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let since_epoch = issued_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        let issued = UnixTimeStamp::from_secs(since_epoch.as_secs());
        let mut claims = Claims::with_custom_claims(AccessClaims { access }, ttl.into())
            .with_issuer(&self.issuer)
            .with_subject(subject)
            .with_audience(audience)
            .with_jwt_id(generate_secret(16));
        claims.issued_at = Some(issued);
        claims.invalid_before = Some(issued);
        claims.expires_at = Some(issued + UnixTimeStamp::from_secs(ttl.as_secs()));
        self.key
            .sign(claims)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Checks signature, issuer, audience, expiry and not-before (with one minute of
    /// clock skew between gateway replicas), and returns what the token grants.
    pub fn verify(&self, token: &str, audience: &str) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid("token too long".into()));
        }
        let now = unix_now();
        if let Some(cached) = self.lock_cache().get(token) {
            if cached.audience == audience && now < cached.expires_at {
                return Ok(cached.token.clone());
            }
        }
        let verified = self.verify_signature(token, audience)?;
        let mut cache = self.lock_cache();
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.retain(|_, cached| now < cached.expires_at);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), verified.clone());
        Ok(verified.token)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedToken>> {
        // The map holds only verified entries; a panic elsewhere cannot corrupt it.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verify_signature(&self, token: &str, audience: &str) -> Result<CachedToken, TokenError> {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([self.issuer.clone()])),
            allowed_audiences: Some(HashSet::from([audience.to_owned()])),
            time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(60)),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..VerificationOptions::default()
        };
        let claims = self
            .public
            .verify_token::<AccessClaims>(token, Some(options))
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let Some(expires_at) = claims.expires_at else {
            return Err(TokenError::Invalid("token has no expiry".into()));
        };
        Ok(CachedToken {
            audience: audience.to_owned(),
            expires_at: expires_at.as_secs(),
            token: VerifiedToken {
                subject: claims.subject.unwrap_or_default(),
                access: claims.custom.access,
            },
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(name: &str) -> Vec<ResourceAccess> {
        vec![ResourceAccess {
            kind: "repository".into(),
            name: name.into(),
            actions: vec!["pull".into()],
        }]
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_access() {
        let keys = TokenKeys::generate("berth");
        let token = keys
            .issue("alice", "registry", pull("a/b"), Duration::from_secs(60))
            .unwrap();
        let verified = keys.verify(&token, "registry").unwrap();
        assert_eq!(verified.subject, "alice");
        assert!(verified.allows("repository", "a/b", "pull"));
        assert!(!verified.allows("repository", "a/b", "push"));
    }

    #[test]
    fn other_keys_audiences_issuers_and_tampering_are_refused() {
        let keys = TokenKeys::generate("berth");
        let token = keys
            .issue("alice", "registry", pull("a/b"), Duration::from_secs(60))
            .unwrap();
        assert!(TokenKeys::generate("berth")
            .verify(&token, "registry")
            .is_err());
        assert!(keys.verify(&token, "other-service").is_err());
        let foreign_issuer =
            TokenKeys::from_pem(&keys.key.to_pem().unwrap(), "someone-else").unwrap();
        assert!(foreign_issuer.verify(&token, "registry").is_err());
        // Widen the scope in the payload without re-signing.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(engine.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = engine.encode(payload.replace("\"pull\"", "\"pull\",\"push\""));
        assert!(keys.verify(&parts.join("."), "registry").is_err());
        assert!(keys.verify("not.a.token", "registry").is_err());
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let expired = keys
            .issue_at(
                "alice",
                "registry",
                pull("a/b"),
                an_hour_ago,
                Duration::from_secs(300),
            )
            .unwrap();
        assert!(keys.verify(&expired, "registry").is_err());
        assert!(keys
            .verify(&"a".repeat(MAX_TOKEN_BYTES + 1), "registry")
            .is_err());
    }

    #[test]
    fn a_cached_token_still_needs_its_audience_and_a_live_expiry() {
        let keys = TokenKeys::generate("berth");
        let token = keys
            .issue("alice", "registry", pull("a/b"), Duration::from_secs(60))
            .unwrap();
        assert!(keys.verify(&token, "registry").is_ok());
        assert!(
            keys.verify(&token, "registry").is_ok(),
            "second use is served from the cache"
        );
        assert!(keys.verify(&token, "other-service").is_err());
        // An entry past its expiry is not trusted: the signature path decides again.
        keys.lock_cache().get_mut(&token).unwrap().expires_at = 0;
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let expired = keys
            .issue_at(
                "alice",
                "registry",
                pull("a/b"),
                an_hour_ago,
                Duration::from_secs(300),
            )
            .unwrap();
        assert!(keys.verify(&expired, "registry").is_err());
        assert!(
            keys.lock_cache().get(&expired).is_none(),
            "refused tokens are not cached"
        );
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth/token-key.pem");
        let first = TokenKeys::load_or_generate(&path, "berth").unwrap();
        let token = first
            .issue("alice", "registry", pull("a/b"), Duration::from_secs(60))
            .unwrap();
        let second = TokenKeys::load_or_generate(&path, "berth").unwrap();
        assert!(second.verify(&token, "registry").is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by its owner only"
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            TokenKeys::load_or_generate(&path, "berth"),
            Err(TokenError::KeyInvalid { .. })
        ));
    }
}
