//! Content-addressed blobs in a local directory.
//!
//! Layout: `blobs/<algorithm>/<first two hex>/<hex>` for blobs, `uploads/<uuid>` for
//! uploads in progress. A blob file only ever appears by `rename` from a fully written,
//! fsynced upload file, so a reader can never see a partial blob, and a crash leaves at
//! worst an orphaned upload file (removed when its session expires).
//!
//! Writes use two blocking threads fed from the request stream: one hashes, one writes.
//! SHA-256 and the write syscalls then overlap instead of adding up, which is what keeps
//! a large push close to hashing speed. Both queues are bounded, so memory per upload is
//! a few chunks whatever the blob size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Appended, BlobStore, ByteRange, ByteStream, StorageError};
use crate::digest::{Algorithm, Digest, DigestHasher};

/// Chunks in flight per upload between the request and each blocking thread.
const WRITE_QUEUE_CHUNKS: usize = 16;
/// Read size when streaming a blob out; large enough to keep syscalls cheap.
const READ_CHUNK: usize = 512 * 1024;
/// Blobs up to this size are read in one go instead of through a reader thread.
const SMALL_BLOB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FilesystemStore {
    /// Directory holding `blobs/` and `uploads/`.
    root: PathBuf,
    /// Whether commits fsync; off only for throwaway set-ups where speed beats durability.
    fsync: bool,
}

impl FilesystemStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>, fsync: bool) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FilesystemStore { root, fsync })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upload_path(&self, id: Uuid) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
}

fn not_found_as<T>(
    result: io::Result<T>,
    err: impl FnOnce() -> StorageError,
) -> Result<T, StorageError> {
    result.map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            err()
        } else {
            StorageError::Io(e)
        }
    })
}

#[async_trait]
impl BlobStore for FilesystemStore {
    async fn create_upload(&self, id: Uuid) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        blocking(move || {
            OpenOptions::new().write(true).create_new(true).open(path)?;
            Ok(())
        })
        .await
    }

    async fn append_upload(
        &self,
        id: Uuid,
        offset: u64,
        mut body: ByteStream,
        mut hasher: DigestHasher,
    ) -> Result<Appended, StorageError> {
        let path = self.upload_path(id);
        let mut file = blocking(move || {
            let mut file = not_found_as(OpenOptions::new().write(true).open(path), || {
                StorageError::UploadNotFound(id)
            })?;
            file.seek(SeekFrom::Start(offset))?;
            Ok(file)
        })
        .await?;

        let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
        let (write_tx, mut write_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
        let hash_thread = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = hash_rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        let write_thread = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let mut written = 0u64;
            while let Some(chunk) = write_rx.blocking_recv() {
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
            Ok(written)
        });

        let mut body_error = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    // A closed queue means the writer failed; its error is reported below.
                    if write_tx.send(chunk.clone()).await.is_err()
                        || hash_tx.send(chunk).await.is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        drop(hash_tx);
        drop(write_tx);
        let hasher = hash_thread
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?;
        let written = write_thread
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))??;
        if let Some(e) = body_error {
            return Err(StorageError::Body(e));
        }
        Ok(Appended { written, hasher })
    }

    async fn hash_upload(
        &self,
        id: Uuid,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<DigestHasher, StorageError> {
        let path = self.upload_path(id);
        blocking(move || {
            let file = not_found_as(File::open(path), || StorageError::UploadNotFound(id))?;
            let mut reader = file.take(len);
            let mut hasher = DigestHasher::new(algorithm);
            let mut buf = vec![0u8; READ_CHUNK];
            let mut seen = 0u64;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                seen += n as u64;
            }
            if seen != len {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("upload {id} holds {seen} bytes, expected {len}"),
                )));
            }
            Ok(hasher)
        })
        .await
    }

    async fn commit_upload(&self, id: Uuid, len: u64, digest: &Digest) -> Result<(), StorageError> {
        let upload = self.upload_path(id);
        let blob = self.blob_path(digest);
        let fsync = self.fsync;
        blocking(move || {
            let file = not_found_as(OpenOptions::new().write(true).open(&upload), || {
                StorageError::UploadNotFound(id)
            })?;
            // A failed PATCH may have left bytes past the accepted length.
            file.set_len(len)?;
            if fsync {
                file.sync_all()?;
            }
            drop(file);
            if blob.exists() {
                // Same digest, same bytes: the blob is already there.
                fs::remove_file(&upload)?;
                return Ok(());
            }
            let dir = blob.parent().expect("blob path has a parent");
            fs::create_dir_all(dir)?;
            fs::rename(&upload, &blob)?;
            if fsync {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let path = self.blob_path(digest);
        blocking(move || match fs::metadata(path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        let path = self.blob_path(digest);
        let missing = digest.clone();
        let (file, len) = blocking(move || {
            let mut file = not_found_as(File::open(path), || StorageError::BlobNotFound(missing))?;
            let size = file.metadata()?.len();
            let (start, len) = match range {
                Some(r) => (r.start, r.len()),
                None => (0, size),
            };
            file.seek(SeekFrom::Start(start))?;
            Ok((file, len))
        })
        .await?;

        if len <= SMALL_BLOB {
            let bytes = blocking(move || {
                let mut buf = Vec::with_capacity(len as usize);
                file.take(len).read_to_end(&mut buf)?;
                Ok(Bytes::from(buf))
            })
            .await?;
            return Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })));
        }

        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let mut reader = file.take(len);
            loop {
                let mut buf = BytesMut::zeroed(READ_CHUNK);
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        // The client went away: stop reading.
                        if tx.blocking_send(Ok(buf.freeze())).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream_from(rx)))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StorageError> {
        let path = self.blob_path(digest);
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    async fn collect(stream: ByteStream) -> Vec<u8> {
        stream.map(|c| c.unwrap().to_vec()).concat().await
    }

    #[tokio::test]
    async fn upload_hash_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), true).unwrap();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        let first = store
            .append_upload(
                id,
                0,
                body(vec![b"hello ", b"wor"]),
                DigestHasher::new(Algorithm::Sha256),
            )
            .await
            .unwrap();
        assert_eq!(first.written, 9);
        let second = store
            .append_upload(id, 9, body(vec![b"ld"]), first.hasher)
            .await
            .unwrap();
        let digest = second.hasher.finish();
        assert_eq!(digest, Digest::sha256_of(b"hello world"));
        // Re-hashing from disk, as after a restart, gives the same state.
        let rehashed = store.hash_upload(id, 11, Algorithm::Sha256).await.unwrap();
        assert_eq!(rehashed.finish(), digest);

        assert_eq!(store.blob_size(&digest).await.unwrap(), None);
        store.commit_upload(id, 11, &digest).await.unwrap();
        assert_eq!(store.blob_size(&digest).await.unwrap(), Some(11));
        assert!(!store.upload_path(id).exists());
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            b"hello world"
        );
        let range = ByteRange { start: 6, end: 10 };
        assert_eq!(
            collect(store.read_blob(&digest, Some(range)).await.unwrap()).await,
            b"world"
        );
    }

    #[tokio::test]
    async fn failed_body_reports_body_error_and_commit_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        store
            .append_upload(
                id,
                0,
                body(vec![b"abc"]),
                DigestHasher::new(Algorithm::Sha256),
            )
            .await
            .unwrap();
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"garbage")),
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client went away",
            )),
        ]));
        let err = store
            .append_upload(id, 3, failing, DigestHasher::new(Algorithm::Sha256))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Body(_)));
        // The accepted length is still 3; commit cuts the garbage off.
        let digest = Digest::sha256_of(b"abc");
        store.commit_upload(id, 3, &digest).await.unwrap();
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            b"abc"
        );
    }

    #[tokio::test]
    async fn large_blobs_stream_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let appended = store
            .append_upload(
                id,
                0,
                Box::pin(futures::stream::iter(chunks)),
                DigestHasher::new(Algorithm::Sha256),
            )
            .await
            .unwrap();
        let digest = appended.hasher.finish();
        store
            .commit_upload(id, data.len() as u64, &digest)
            .await
            .unwrap();
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            data
        );
        let range = ByteRange {
            start: 1_000_000,
            end: 2_500_000,
        };
        assert_eq!(
            collect(store.read_blob(&digest, Some(range)).await.unwrap()).await,
            &data[1_000_000..=2_500_000]
        );
    }

    #[tokio::test]
    async fn missing_things_are_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let digest = Digest::sha256_of(b"nope");
        assert!(matches!(
            store.read_blob(&digest, None).await,
            Err(StorageError::BlobNotFound(_))
        ));
        let id = Uuid::new_v4();
        assert!(matches!(
            store
                .append_upload(id, 0, body(vec![]), DigestHasher::new(Algorithm::Sha256))
                .await,
            Err(StorageError::UploadNotFound(_))
        ));
        store.delete_upload(id).await.unwrap();
        store.delete_blob(&digest).await.unwrap();
    }
}
