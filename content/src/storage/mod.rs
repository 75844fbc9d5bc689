//! Blob storage: where blob bytes live, behind one trait.
//!
//! The trait is shaped by the two guarantees the registry owes: every byte is hashed
//! while it streams in (so a 1 GiB push is read once, never re-read to verify), and a
//! blob becomes visible only after its digest is verified, by one atomic step. Upload
//! staging is part of the trait because where partial data lives depends on the
//! backend (a temporary file here, a multipart upload on S3 later).

mod filesystem;

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use crate::digest::{Algorithm, Digest, DigestHasher};

pub use filesystem::FilesystemStore;

/// A stream of body bytes, from a client or from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} is not in storage")]
    BlobNotFound(Digest),
    #[error("upload {0} has no data in storage")]
    UploadNotFound(Uuid),
    /// The request body failed mid-stream (a client disconnect, most often); what was
    /// written of it must not count.
    #[error("the request body ended with an error: {0}")]
    Body(io::Error),
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// An inclusive byte range within a blob, already checked against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What [`BlobStore::append_upload`] returns: how much it wrote and the hasher that has
/// seen every byte of the upload so far.
#[derive(Debug)]
pub struct Appended {
    pub written: u64,
    pub hasher: DigestHasher,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Creates empty staging space for a new upload.
    async fn create_upload(&self, id: Uuid) -> Result<(), StorageError>;

    /// Writes `body` into the upload starting at `offset`, feeding every byte to `hasher`
    /// (which must have seen exactly the upload's first `offset` bytes). On error the
    /// hasher is lost and bytes past `offset` are undefined: the caller keeps the old
    /// offset and re-hashes with [`BlobStore::hash_upload`] before the next append.
    async fn append_upload(
        &self,
        id: Uuid,
        offset: u64,
        body: ByteStream,
        hasher: DigestHasher,
    ) -> Result<Appended, StorageError>;

    /// Hashes the first `len` bytes of an upload: how an upload resumes after a restart
    /// or on another gateway replica, where no in-memory hasher exists.
    async fn hash_upload(
        &self,
        id: Uuid,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<DigestHasher, StorageError>;

    /// Makes the upload's first `len` bytes durable and visible as blob `digest`. The
    /// caller has verified the digest; this step is atomic: a crash leaves either the
    /// old state or the complete blob.
    async fn commit_upload(&self, id: Uuid, len: u64, digest: &Digest) -> Result<(), StorageError>;

    /// Removes an upload's staging data; removing a missing upload is not an error.
    async fn delete_upload(&self, id: Uuid) -> Result<(), StorageError>;

    /// The stored size of a blob, or `None` when storage does not have it.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Streams a blob, or the given range of it, without holding it all in memory.
    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError>;

    /// Deletes a blob's bytes; deleting a missing blob is not an error.
    async fn delete_blob(&self, digest: &Digest) -> Result<(), StorageError>;
}
