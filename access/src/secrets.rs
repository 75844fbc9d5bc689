//! Secrets Berth must read back in clear, encrypted at rest: the passwords of remote
//! registries, which replication presents to them.
//!
//! Hashing (as for user passwords and robot secrets) cannot work here, so each secret is
//! sealed with XChaCha20-Poly1305 under one 32-byte key per installation and stored as
//! `nonce || ciphertext`. The 24-byte nonce is random per seal, which XChaCha's nonce
//! size makes safe without a counter. Every gateway and worker of an installation shares
//! the key, exactly as they share the token signing key: a file generated on the
//! gateway's first start (mode 0600), or the same key given in configuration.
//!
//! Each seal also binds a context (the purpose of the secret) as associated data, so a
//! sealed value copied from one purpose to another does not open.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::password::generate_secret;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of the nonce that starts every sealed value.
const NONCE_LEN: usize = 24;
/// Bytes Poly1305 adds to the ciphertext.
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("cannot read or write the secret key at {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the secret key file {path} does not exist: copy the gateway's key file there, \
         or set secret_key"
    )]
    KeyMissing { path: String },
    /// The key's text is not base64 of exactly 32 bytes.
    #[error("the secret key {origin} is invalid: {reason}")]
    KeyInvalid { origin: String, reason: String },
}

/// XChaCha20-Poly1305 refuses messages of 256 GiB and more; nothing else fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a secret of {0} bytes is too large to encrypt")]
pub struct SealError(pub usize);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Authentication failed: another key sealed it, or the stored bytes were altered.
    #[error(
        "the secret key does not match the one the credential was stored with \
         (or the stored credential was altered)"
    )]
    KeyMismatch,
    #[error("the stored credential is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("the stored credential is not UTF-8")]
    NotUtf8,
}

/// The installation's key for secrets at rest. It never prints.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretKey {
        SecretKey {
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }

    /// A fresh random key (tests, and the first start of an installation).
    pub fn generate() -> SecretKey {
        Self::from_bytes(&random_key())
    }

    /// A key written as base64 (standard alphabet, padded or not) of 32 bytes;
    /// surrounding whitespace is ignored. `origin` names where it came from, for the
    /// error.
    pub fn from_base64(text: &str, origin: &str) -> Result<SecretKey, SecretKeyError> {
        let invalid = |reason: String| SecretKeyError::KeyInvalid {
            origin: origin.to_owned(),
            reason,
        };
        let text = text.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|e| invalid(format!("not base64: {e}")))?;
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "{} bytes where {KEY_LEN} are needed (generate one with `head -c 32 /dev/urandom | base64`)",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Reads the key file at `path`, which must exist (workers: the gateway creates it).
    pub fn load(path: &Path) -> Result<SecretKey, SecretKeyError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretKeyError::KeyMissing { path: shown });
            }
            Err(source) => {
                return Err(SecretKeyError::KeyFile {
                    path: shown,
                    source,
                })
            }
        };
        Self::from_base64(&text, &format!("in {shown}"))
    }

    /// Reads the key file at `path`, or generates one there (mode 0600) when it does not
    /// exist. Processes starting at once agree on one key: see [`create_file_once`].
    pub fn load_or_generate(path: &Path) -> Result<SecretKey, SecretKeyError> {
        if !path.exists() {
            let text = format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode(random_key())
            );
            create_file_once(path, text.as_bytes()).map_err(|source| SecretKeyError::KeyFile {
                path: path.display().to_string(),
                source,
            })?;
        }
        Self::load(path)
    }

    /// The key from configuration: `inline` (base64) when given, else the file at
    /// `file`, generated there if missing and `generate` is set.
    pub fn from_config(
        inline: Option<&str>,
        file: &Path,
        generate: bool,
    ) -> Result<SecretKey, SecretKeyError> {
        match inline {
            Some(text) => Self::from_base64(text, "in the configuration (secret_key)"),
            None if generate => Self::load_or_generate(file),
            None => Self::load(file),
        }
    }

    /// Encrypts `plaintext` for `context` (what the secret is for); the result is
    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| SealError(plaintext.len()))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts what [`SecretKey::seal`] produced for the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Truncated(sealed.len()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: context,
        };
        self.cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| OpenError::KeyMismatch)
    }

    /// [`SecretKey::seal`] of a text secret.
    pub fn seal_str(&self, context: &[u8], secret: &str) -> Result<Vec<u8>, SealError> {
        self.seal(context, secret.as_bytes())
    }

    /// [`SecretKey::open`] of a text secret.
    pub fn open_string(&self, context: &[u8], sealed: &[u8]) -> Result<SecretString, OpenError> {
        let bytes = self.open(context, sealed)?;
        String::from_utf8(bytes)
            .map(SecretString)
            .map_err(|_| OpenError::NotUtf8)
    }
}

/// A secret in clear, in memory only: it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> SecretString {
        SecretString(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// Writes `contents` to `path` (mode 0600, parent directories created) unless the file
/// exists. The file is written and synced under a temporary name and hard-linked into
/// place, which fails if another process got there first; then that process's file
/// stands, so concurrent first starts agree on one key and nobody reads a half-written
/// file. The token signing key and the secret key are both written this way.
pub fn create_file_once(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".berth-key-{}.tmp", generate_secret(12)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| match std::fs::hard_link(&temp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&temp);
    linked
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const CONTEXT: &[u8] = b"test-context";

    #[test]
    fn sealed_secrets_open_with_the_same_key_and_context() {
        let key = SecretKey::generate();
        let sealed = key.seal_str(CONTEXT, "Remote-Passw0rd").unwrap();
        assert!(!sealed
            .windows("Remote-Passw0rd".len())
            .any(|w| w == b"Remote-Passw0rd"));
        assert_eq!(sealed.len(), NONCE_LEN + "Remote-Passw0rd".len() + TAG_LEN);
        let opened = key.open_string(CONTEXT, &sealed).unwrap();
        assert_eq!(opened.expose(), "Remote-Passw0rd");
        // A fresh nonce each time: the same secret never seals to the same bytes.
        assert_ne!(key.seal_str(CONTEXT, "Remote-Passw0rd").unwrap(), sealed);
        // The empty secret round-trips too.
        let empty = key.seal_str(CONTEXT, "").unwrap();
        assert_eq!(key.open_string(CONTEXT, &empty).unwrap().expose(), "");
    }

    #[test]
    fn another_key_or_context_does_not_open() {
        let key = SecretKey::generate();
        let sealed = key.seal_str(CONTEXT, "s3cret").unwrap();
        let other = SecretKey::generate();
        let refused = other.open(CONTEXT, &sealed).unwrap_err();
        assert_eq!(refused, OpenError::KeyMismatch);
        assert!(refused.to_string().contains("secret key does not match"));
        assert_eq!(
            key.open(b"other-context", &sealed),
            Err(OpenError::KeyMismatch)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let key = SecretKey::generate();
        let sealed = key.seal_str(CONTEXT, "s3cret").unwrap();
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert_eq!(
                key.open(CONTEXT, &altered),
                Err(OpenError::KeyMismatch),
                "byte {i}"
            );
        }
        assert_eq!(
            key.open(CONTEXT, &sealed[..sealed.len() - 1]),
            Err(OpenError::KeyMismatch)
        );
        assert_eq!(
            key.open(CONTEXT, &sealed[..NONCE_LEN]),
            Err(OpenError::Truncated(NONCE_LEN))
        );
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_only() {
        let text = base64::engine::general_purpose::STANDARD.encode([7u8; KEY_LEN]);
        let key = SecretKey::from_base64(&format!("  {text}\n"), "test").unwrap();
        let same = SecretKey::from_bytes(&[7u8; KEY_LEN]);
        assert_eq!(
            same.open_string(CONTEXT, &key.seal_str(CONTEXT, "x").unwrap())
                .unwrap()
                .expose(),
            "x"
        );
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode([7u8; KEY_LEN]);
        assert!(SecretKey::from_base64(&unpadded, "test").is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let error = SecretKey::from_base64(&short, "test").unwrap_err();
        assert!(error.to_string().contains("16 bytes"), "{error}");
        assert!(SecretKey::from_base64("not base64!", "test").is_err());
        assert_eq!(format!("{key:?}"), "SecretKey(***)");
        assert_eq!(
            format!("{:?}", SecretString::new("pw")),
            "SecretString(***)"
        );
    }

    #[test]
    fn the_key_file_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        assert!(matches!(
            SecretKey::load(&path),
            Err(SecretKeyError::KeyMissing { .. })
        ));
        let first = SecretKey::load_or_generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let contents = std::fs::read_to_string(&path).unwrap();
        let again = SecretKey::load_or_generate(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), contents);
        let sealed = first.seal_str(CONTEXT, "kept").unwrap();
        assert_eq!(
            again.open_string(CONTEXT, &sealed).unwrap().expose(),
            "kept"
        );
        let loaded = SecretKey::load(&path).unwrap();
        assert_eq!(
            loaded.open_string(CONTEXT, &sealed).unwrap().expose(),
            "kept"
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.key")]);
    }

    #[test]
    fn the_inline_key_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let inline = base64::engine::general_purpose::STANDARD.encode([9u8; KEY_LEN]);
        let key = SecretKey::from_config(Some(&inline), &path, true).unwrap();
        assert!(!path.exists(), "an inline key must not create the file");
        let sealed = SecretKey::from_bytes(&[9u8; KEY_LEN])
            .seal_str(CONTEXT, "x")
            .unwrap();
        assert!(key.open(CONTEXT, &sealed).is_ok());
        assert!(matches!(
            SecretKey::from_config(None, &path, false),
            Err(SecretKeyError::KeyMissing { .. })
        ));
        assert!(SecretKey::from_config(None, &path, true).is_ok());
        assert!(path.exists());
    }
}
