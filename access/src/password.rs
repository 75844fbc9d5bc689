//! Argon2id hashes of passwords and robot secrets, and generation of robot secrets.
//!
//! Hashing is deliberately slow (tens of milliseconds) and memory-hard (19 MiB per
//! hash with the default parameters), so the async functions run it on the blocking
//! pool rather than on a runtime worker, and at most [`MAX_CONCURRENT_HASHES`] at a
//! time: a burst of logins queues instead of allocating gigabytes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash: {0}")]
    Hash(String),
    #[error("hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The PHC string (`$argon2id$v=19$…`) of `secret`, with a fresh random salt.
pub fn hash(secret: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `secret` matches `phc`. A malformed stored hash matches nothing.
pub fn verify(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes computed at once per process; each holds 19 MiB while it runs.
pub const MAX_CONCURRENT_HASHES: usize = 8;

static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HASHES);

pub async fn hash_blocking(secret: String) -> Result<String, PasswordError> {
    // The semaphore is never closed, so acquiring cannot fail; if it ever did, hashing
    // without a permit is still correct, only less frugal.
    let _permit = HASHING.acquire().await.ok();
    tokio::task::spawn_blocking(move || hash(&secret)).await?
}

pub async fn verify_blocking(secret: String, phc: String) -> Result<bool, PasswordError> {
    let _permit = HASHING.acquire().await.ok();
    Ok(tokio::task::spawn_blocking(move || verify(&secret, &phc)).await?)
}

/// A hash that no secret matches cheaply, verified against when the account does not
/// exist, so a wrong username costs as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("berth-decoy-password-never-matches").unwrap_or_default())
}

/// A random secret of `len` characters from `[A-Za-z0-9]` with at least one upper-case
/// letter, one lower-case letter and one digit (Harbor's rule for robot secrets).
pub fn generate_secret(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    loop {
        let secret: String = (0..len)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        if is_strong_secret(&secret) {
            return secret;
        }
    }
}

/// Harbor's `IsValidSec`: 8–128 characters with upper, lower and digit.
pub fn is_strong_secret(secret: &str) -> bool {
    (8..=128).contains(&secret.chars().count())
        && secret.chars().any(|c| c.is_ascii_uppercase())
        && secret.chars().any(|c| c.is_ascii_lowercase())
        && secret.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_per_salt() {
        let a = hash("Correct-Horse-1").unwrap();
        let b = hash("Correct-Horse-1").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("Correct-Horse-1", &a));
        assert!(!verify("correct-horse-1", &a));
        assert!(!verify("Correct-Horse-1", "not a hash"));
        assert!(!verify("berth-decoy", decoy_hash()));
    }

    #[test]
    fn generated_secrets_are_strong_and_distinct() {
        let a = generate_secret(32);
        assert_eq!(a.len(), 32);
        assert!(is_strong_secret(&a));
        assert_ne!(a, generate_secret(32));
        assert!(!is_strong_secret("short1A"));
        assert!(!is_strong_secret("alllowercase1"));
    }
}
