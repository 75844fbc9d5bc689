//! Blob uploads: `POST`, `PATCH`, `PUT`, `GET` and `DELETE` on `/v2/<name>/blobs/uploads/`.
//!
//! Every upload, monolithic or chunked, is a session: a row in `upload_sessions` holding
//! the accepted length, and staging data in blob storage. Bodies stream straight into
//! storage and are hashed on the way, so memory per upload is bounded whatever the size.
//! The hasher of each upload is cached in memory ([`UploadHashers`]) so that a chunk
//! never re-reads the chunks before it; the cache is only an optimisation: after a
//! restart, on another replica, or after a failed chunk, the hasher is rebuilt from the
//! stored bytes. A blob becomes visible only once its digest is verified, its bytes are
//! committed to storage by one atomic step, and its row and repository link are written
//! in one transaction.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_content::metadata::uploads::UploadSession;
use berth_content::metadata::{blobs, repositories, uploads};
use berth_content::storage::{ByteStream, StorageError};
use berth_content::{Algorithm, Digest, DigestError, DigestHasher, RepositoryName};
use futures::TryStreamExt;
use tokio::sync::OwnedMutexGuard;
use tracing::{instrument, Instrument};
use uuid::Uuid;

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

/// Sessions expired per statement, so one sweep never holds a huge delete open.
const EXPIRE_BATCH: i64 = 500;

/// A hasher that has seen exactly the first `offset` bytes of an upload.
#[derive(Debug)]
struct CachedHasher {
    offset: u64,
    hasher: DigestHasher,
}

/// One upload's entry: its lock and its cached hasher.
#[derive(Debug)]
struct Slot {
    /// Held for the whole of a write, so two PATCHes to one upload never write at the
    /// same offset at once; `None` when the hasher is unknown (lost with a failed chunk).
    state: Arc<tokio::sync::Mutex<Option<CachedHasher>>>,
    /// When the entry was last locked, so a sweep can drop entries of uploads that
    /// ended on another replica.
    last_used: Instant,
}

/// In-memory hashers of uploads in progress, keyed by upload id, each behind an async
/// lock that also serialises writes to the upload within this process.
///
/// Across replicas the compare-and-set on the session's size in PostgreSQL decides which
/// of two concurrent chunks counts; the lock here additionally keeps one process from
/// interleaving writes to the same staging file.
#[derive(Debug, Default)]
pub struct UploadHashers {
    inner: Mutex<HashMap<Uuid, Slot>>,
}

impl UploadHashers {
    /// Locks upload `id` for one operation; the guard holds its cached hasher, if any.
    async fn lock(&self, id: Uuid) -> OwnedMutexGuard<Option<CachedHasher>> {
        let state = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let slot = map.entry(id).or_insert_with(|| Slot {
                state: Arc::new(tokio::sync::Mutex::new(None)),
                last_used: Instant::now(),
            });
            slot.last_used = Instant::now();
            slot.state.clone()
        };
        state.lock_owned().await
    }

    /// Drops the entry of an upload whose session row is gone (completed, cancelled,
    /// expired). Only then is it safe: a task still waiting on the old lock re-reads the
    /// session after getting it and finds it gone, so it cannot write beside a task
    /// holding a fresh entry. Never call it for a session that may still exist.
    fn forget(&self, id: Uuid) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Drops entries idle for longer than `max_idle` that nobody holds: uploads that
    /// were abandoned, or that ended on another replica.
    fn evict_idle(&self, max_idle: Duration) -> usize {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|_, slot| {
            slot.last_used.elapsed() <= max_idle || Arc::strong_count(&slot.state) > 1
        });
        before - map.len()
    }

    /// Forgets every cached hasher, as a restart would; the next chunk of each upload
    /// re-hashes its stored bytes.
    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// How many uploads have an entry; for tests and metrics.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Periodically expires uploads untouched for `uploads.expire_after_secs`, until `stop`
/// turns true.
pub async fn sweep_expired(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = Duration::from_secs(state.config.uploads.sweep_interval_secs.max(1));
    let expire_after = Duration::from_secs(state.config.uploads.expire_after_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = stop.wait_for(|stop| *stop) => {
                // Either stop turned true or the sender is gone: both mean shut down.
                let _ = changed;
                return;
            }
        }
        match expire_uploads(&state, expire_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "upload expiry failed; retrying next sweep"),
        }
        state.hashers.evict_idle(expire_after);
    }
}

/// One expiry pass: deletes sessions not updated for `older_than` and their staging
/// data. Returns how many sessions expired.
pub async fn expire_uploads(state: &AppState, older_than: Duration) -> RegistryResult<u64> {
    let mut total = 0u64;
    loop {
        let mut conn = state.db.acquire().await?;
        let ids = uploads::delete_expired(&mut conn, older_than, EXPIRE_BATCH).await?;
        drop(conn);
        for id in &ids {
            state.hashers.forget(*id);
            // The row is gone, so nobody can reach this data any more; a failure here
            // leaves an unreferenced file, which is logged rather than retried.
            if let Err(e) = state.storage.delete_upload(*id).await {
                tracing::warn!(upload = %id, error = %e, "cannot remove data of expired upload");
            }
        }
        total += ids.len() as u64;
        if (ids.len() as i64) < EXPIRE_BATCH {
            return Ok(total);
        }
    }
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic push, or a new session.
#[instrument(skip_all, fields(repository = %name))]
pub async fn start(
    state: AppState,
    name: RepositoryName,
    req: Request,
) -> RegistryResult<Response> {
    detached(start_upload(state, name, req)).await
}

async fn start_upload(
    state: AppState,
    name: RepositoryName,
    req: Request,
) -> RegistryResult<Response> {
    let query = query_params(&req);
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest_param(mount)?;
        // An unparsable `from` cannot name a repository holding the blob: the spec's
        // answer to "cannot mount" is a normal upload, not an error.
        let from = match query.get("from") {
            Some(from) => match RepositoryName::parse(from) {
                Ok(from) => Some(Some(from)),
                Err(_) => None,
            },
            None => Some(None),
        };
        if let Some(from) = from {
            if let Some(response) = try_mount(&state, &name, &digest, from.as_ref()).await? {
                return Ok(response);
            }
        }
    }
    // Validated before anything is created, so a bad digest leaves nothing behind.
    let monolithic = query
        .get("digest")
        .map(|d| parse_digest_param(d))
        .transpose()?;

    let session = create_session(&state, &name).await?;
    let Some(digest) = monolithic else {
        return Ok(upload_accepted(StatusCode::ACCEPTED, &name, session.id, 0));
    };
    let guard = state.hashers.lock(session.id).await;
    let result = finish(&state, &name, session, guard, &digest, req).await;
    if result.is_err() {
        // A monolithic push is all or nothing: the client never saw the session's URL,
        // so nobody could continue it.
        discard(&state, session.id).await;
    }
    result
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how much of the upload the registry has.
#[instrument(skip_all, fields(repository = %name, upload = %id))]
pub async fn status(state: AppState, name: RepositoryName, id: Uuid) -> RegistryResult<Response> {
    let session = find_session(&state, &name, id).await?;
    Ok(upload_accepted(
        StatusCode::NO_CONTENT,
        &name,
        id,
        size_of(&session),
    ))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk (checked against
/// `Content-Range` when given) or, without `Content-Range`, the streamed body.
#[instrument(skip_all, fields(repository = %name, upload = %id))]
pub async fn patch(
    state: AppState,
    name: RepositoryName,
    id: Uuid,
    req: Request,
) -> RegistryResult<Response> {
    detached(patch_upload(state, name, id, req)).await
}

async fn patch_upload(
    state: AppState,
    name: RepositoryName,
    id: Uuid,
    req: Request,
) -> RegistryResult<Response> {
    let (session, mut guard) = lock_session(&state, &name, id).await?;
    let size = size_of(&session);
    let expected = check_chunk(req.headers(), &name, id, size)?;
    let hasher = hasher_at(&state, id, size, Algorithm::Sha256, guard.take()).await?;
    let (written, hasher) = append(&state, &name, id, size, expected, hasher, req).await?;
    let new_size = size + written;
    advance(&state, &session, new_size).await?;
    *guard = Some(CachedHasher {
        offset: new_size,
        hasher,
    });
    Ok(upload_accepted(StatusCode::ACCEPTED, &name, id, new_size))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=…`: appends the optional last chunk,
/// verifies the digest and makes the blob visible.
#[instrument(skip_all, fields(repository = %name, upload = %id))]
pub async fn complete(
    state: AppState,
    name: RepositoryName,
    id: Uuid,
    req: Request,
) -> RegistryResult<Response> {
    detached(complete_upload(state, name, id, req)).await
}

async fn complete_upload(
    state: AppState,
    name: RepositoryName,
    id: Uuid,
    req: Request,
) -> RegistryResult<Response> {
    // A missing or malformed digest is a client mistake it can correct with another
    // PUT, so the session is kept; only a digest that does not match discards it.
    let digest = match query_params(&req).get("digest") {
        Some(d) => parse_digest_param(d)?,
        None => {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required to complete an upload",
            ))
        }
    };
    let (session, guard) = lock_session(&state, &name, id).await?;
    finish(&state, &name, session, guard, &digest, req).await
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancels the upload and removes its data.
#[instrument(skip_all, fields(repository = %name, upload = %id))]
pub async fn cancel(state: AppState, name: RepositoryName, id: Uuid) -> RegistryResult<Response> {
    let session = find_session(&state, &name, id).await?;
    let mut conn = state.db.acquire().await?;
    if !uploads::delete(&mut conn, session.id, None).await? {
        return Err(upload_unknown(id));
    }
    drop(conn);
    state.hashers.forget(id);
    // An in-flight PATCH keeps writing to the unlinked file and then fails its
    // compare-and-set: the session is gone, so nothing it wrote counts.
    state.storage.delete_upload(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs a write to an upload as its own task, so it finishes even when the client goes
/// away. hyper drops a request's future when its connection breaks; dropped mid-write,
/// the upload's lock would be released while storage's writer thread still drains
/// queued chunks into the file, and a resumed PATCH could then write beside it. As a
/// task, the write sees the body's error, waits for storage to stop, and only then lets
/// go of the lock; a transaction is likewise never abandoned half-way.
async fn detached<F>(work: F) -> RegistryResult<Response>
where
    F: Future<Output = RegistryResult<Response>> + Send + 'static,
{
    match tokio::spawn(work.in_current_span()).await {
        Ok(result) => result,
        Err(e) => {
            Err(StorageError::Io(io::Error::other(format!("upload task failed: {e}"))).into())
        }
    }
}

/// Appends the request's body as the last chunk, verifies `digest` and publishes the
/// blob. Called with the upload's lock held.
async fn finish(
    state: &AppState,
    name: &RepositoryName,
    session: UploadSession,
    guard: OwnedMutexGuard<Option<CachedHasher>>,
    digest: &Digest,
    req: Request,
) -> RegistryResult<Response> {
    let id = session.id;
    let mut guard = guard;
    let size = size_of(&session);
    let expected = check_chunk(req.headers(), name, id, size)?;
    // The cached hasher is sha256, what nearly every client uses. For another algorithm
    // (sha512) the stored bytes are hashed once more here with the right one: completion
    // is the first moment the registry learns which algorithm a chunked upload needs.
    let hasher = hasher_at(state, id, size, digest.algorithm(), guard.take()).await?;
    let has_body = declared_length(req.headers())? != Some(0);
    let (total, hasher) = if has_body {
        let (written, hasher) = append(state, name, id, size, expected, hasher, req).await?;
        (size + written, hasher)
    } else {
        (size, hasher)
    };
    let actual = hasher.finish();
    if actual != *digest {
        // Still holding the lock, so nobody waiting on it can write before the session
        // row is gone.
        discard(state, id).await;
        drop(guard);
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!(
                "the uploaded content has digest {actual}, not {digest}; the upload was discarded"
            ),
        )
        .with_detail(
            serde_json::json!({"expected": digest.to_string(), "actual": actual.to_string()}),
        ));
    }

    let total_i64 = to_i64(total)?;
    let mut tx = state.db.begin().await?;
    // Claim the session first: its size must still be what this completion read, or a
    // chunk sent through another replica raced it. The deleted row stays locked until
    // commit, so such a chunk cannot advance it meanwhile.
    if !uploads::delete(&mut tx, id, Some(session.size)).await? {
        return Err(RegistryError::new(
            ErrorCode::BlobUploadUnknown,
            format!("upload {id} was cancelled, expired or changed by a concurrent request"),
        ));
    }
    // Bytes before metadata commits: a crash or a failed commit after the rename leaves
    // a blob file nothing references (garbage collection removes it), never a blob row
    // without bytes.
    state.storage.commit_upload(id, total, digest).await?;
    blobs::insert_and_link(&mut tx, session.repository_id, digest, total_i64).await?;
    tx.commit().await?;
    drop(guard);
    state.hashers.forget(id);
    tracing::info!(digest = %digest, size = total, "blob pushed");
    Ok(blob_created(name, digest))
}

/// Links `digest` into `name` from `from` (or from anywhere, without `from`). `None`
/// when it cannot be mounted and the caller starts a normal upload.
async fn try_mount(
    state: &AppState,
    name: &RepositoryName,
    digest: &Digest,
    from: Option<&RepositoryName>,
) -> RegistryResult<Option<Response>> {
    let mut tx = state.db.begin().await?;
    let repository_id = repositories::find_or_create(&mut tx, name).await?;
    match blobs::mount(&mut tx, repository_id, digest, from).await? {
        Some(_) => {
            tx.commit().await?;
            tracing::info!(digest = %digest, from = ?from.map(RepositoryName::as_str), "blob mounted");
            Ok(Some(blob_created(name, digest)))
        }
        // Rolling back also undoes creating the repository; the upload that follows
        // creates it again.
        None => Ok(None),
    }
}

/// Creates the session row, then its staging data. In that order, a crash leaves at
/// worst a row without data, which answers "upload unknown" and expires like any other.
async fn create_session(state: &AppState, name: &RepositoryName) -> RegistryResult<UploadSession> {
    let id = Uuid::new_v4();
    let mut conn = state.db.acquire().await?;
    let repository_id = repositories::find_or_create(&mut conn, name).await?;
    uploads::create(&mut conn, id, repository_id).await?;
    if let Err(e) = state.storage.create_upload(id).await {
        let _ = uploads::delete(&mut conn, id, None).await;
        return Err(e.into());
    }
    Ok(UploadSession {
        id,
        repository_id,
        size: 0,
    })
}

/// Finds the session and takes its lock. The session is read once before locking, so
/// requests for unknown ids (or ids of other repositories) never create a cache entry,
/// and once more under the lock, because a request that held it may have moved the
/// size or ended the session.
async fn lock_session(
    state: &AppState,
    name: &RepositoryName,
    id: Uuid,
) -> RegistryResult<(UploadSession, OwnedMutexGuard<Option<CachedHasher>>)> {
    find_session(state, name, id).await?;
    let guard = state.hashers.lock(id).await;
    match find_session(state, name, id).await {
        Ok(session) => Ok((session, guard)),
        Err(e) => {
            // It existed a moment ago under this name, so it has ended, not moved: its
            // row is gone and dropping the entry we may have re-created is safe.
            if matches!(e.code(), ErrorCode::BlobUploadUnknown) {
                drop(guard);
                state.hashers.forget(id);
            }
            Err(e)
        }
    }
}

async fn find_session(
    state: &AppState,
    name: &RepositoryName,
    id: Uuid,
) -> RegistryResult<UploadSession> {
    let mut conn = state.db.acquire().await?;
    uploads::find(&mut conn, name, id)
        .await?
        .ok_or_else(|| upload_unknown(id))
}

/// Moves the session's accepted size after a chunk was written completely.
async fn advance(state: &AppState, session: &UploadSession, new_size: u64) -> RegistryResult<()> {
    let mut conn = state.db.acquire().await?;
    if uploads::advance(&mut conn, session.id, session.size, to_i64(new_size)?).await? {
        Ok(())
    } else {
        // Cancelled, expired, or moved by a chunk sent to another replica meanwhile.
        Err(RegistryError::new(
            ErrorCode::BlobUploadUnknown,
            format!(
                "upload {} was cancelled, expired or changed by a concurrent request",
                session.id
            ),
        ))
    }
}

/// Removes a session and its data after a failed completion; failures are logged, as
/// the client's error is what matters and expiry removes leftovers.
async fn discard(state: &AppState, id: Uuid) {
    let deleted = match state.db.acquire().await {
        Ok(mut conn) => uploads::delete(&mut conn, id, None).await,
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        // The session stays reachable; keep its cache entry (and lock) with it.
        tracing::warn!(upload = %id, error = %e, "cannot delete discarded upload session");
        return;
    }
    state.hashers.forget(id);
    if let Err(e) = state.storage.delete_upload(id).await {
        tracing::warn!(upload = %id, error = %e, "cannot remove discarded upload data");
    }
}

/// A hasher that has seen the upload's first `offset` bytes: the cached one when it is
/// at that offset with that algorithm, else one rebuilt from the stored bytes.
async fn hasher_at(
    state: &AppState,
    id: Uuid,
    offset: u64,
    algorithm: Algorithm,
    cached: Option<CachedHasher>,
) -> RegistryResult<DigestHasher> {
    match cached {
        Some(c) if c.offset == offset && c.hasher.algorithm() == algorithm => Ok(c.hasher),
        _ => {
            if offset > 0 {
                tracing::debug!(upload = %id, offset, "re-hashing stored upload data");
            }
            state
                .storage
                .hash_upload(id, offset, algorithm)
                .await
                .map_err(|e| storage_error(id, e))
        }
    }
}

/// Streams the request body into the upload at `offset`. Returns the bytes written and
/// the hasher after them. On any error the session's size is left where it was (the
/// caller only advances it on success) and the hasher is lost.
async fn append(
    state: &AppState,
    name: &RepositoryName,
    id: Uuid,
    offset: u64,
    expected: Option<u64>,
    hasher: DigestHasher,
    req: Request,
) -> RegistryResult<(u64, DigestHasher)> {
    let declared = declared_length(req.headers())?;
    let body: ByteStream = Box::pin(req.into_body().into_data_stream().map_err(io::Error::other));
    let appended = state
        .storage
        .append_upload(id, offset, body, hasher)
        .await
        .map_err(|e| match (e, declared) {
            // hyper ends a body early with an error when the connection closes before
            // Content-Length bytes arrived: to the client that is a size mismatch.
            (StorageError::Body(e), Some(declared)) => {
                tracing::info!(upload = %id, error = %e, "request body ended early");
                RegistryError::new(
                    ErrorCode::SizeInvalid,
                    format!("the body ended before the {declared} bytes Content-Length announced; nothing of it was kept"),
                )
            }
            (e, _) => storage_error(id, e),
        })?;
    let written = appended.written;
    if let Some(declared) = declared {
        if written != declared {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("Content-Length says {declared} bytes but the body had {written}"),
            ));
        }
    }
    // Without Content-Length (chunked transfer) the chunk's length is known only now.
    if let Some(expected) = expected {
        if written != expected {
            return Err(range_invalid(
                name,
                id,
                offset,
                format!("Content-Range announced {expected} bytes but the body had {written}"),
            ));
        }
    }
    Ok((written, appended.hasher))
}

/// Checks a `Content-Range` header, if any, against the upload's size and the body's
/// `Content-Length`; returns the chunk length it announces.
fn check_chunk(
    headers: &HeaderMap,
    name: &RepositoryName,
    id: Uuid,
    size: u64,
) -> RegistryResult<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = value
        .to_str()
        .ok()
        .and_then(parse_content_range)
        .ok_or_else(|| {
            range_invalid(
                name,
                id,
                size,
                format!("Content-Range {value:?} is not of the form <start>-<end>"),
            )
        })?;
    if start != size {
        return Err(range_invalid(
            name,
            id,
            size,
            format!("chunk starts at {start} but the upload has {size} bytes; the next chunk must start at {size}"),
        ));
    }
    let len = end - start + 1;
    if let Some(declared) = declared_length(headers)? {
        if declared != len {
            return Err(range_invalid(
                name,
                id,
                size,
                format!("Content-Range covers {len} bytes but Content-Length is {declared}"),
            ));
        }
    }
    Ok(Some(len))
}

/// Parses a chunk's `Content-Range`: `<start>-<end>` as the spec writes it, also
/// accepting the RFC 9110 form `bytes <start>-<end>/<total|*>` some clients send.
/// `None` when malformed or when `end < start`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let value = value.trim();
    let value = value
        .strip_prefix("bytes ")
        .or_else(|| value.strip_prefix("bytes="))
        .unwrap_or(value)
        .trim();
    let range = match value.split_once('/') {
        Some((range, total)) => {
            let total = total.trim();
            if total != "*" && !is_digits(total) {
                return None;
            }
            range.trim()
        }
        None => value,
    };
    let (start, end) = range.split_once('-')?;
    if !is_digits(start) || !is_digits(end) {
        return None;
    }
    let start: u64 = start.parse().ok()?;
    let end: u64 = end.parse().ok()?;
    (start <= end).then_some((start, end))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The request's `Content-Length`, if it has one.
fn declared_length(headers: &HeaderMap) -> RegistryResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::SizeInvalid,
                    format!("Content-Length {value:?} is not a number"),
                )
            }),
    }
}

fn query_params(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn parse_digest_param(value: &str) -> RegistryResult<Digest> {
    Digest::parse(value).map_err(|e| {
        let message = match e {
            DigestError::UnsupportedAlgorithm(_) => {
                format!("unsupported digest algorithm: {e}")
            }
            _ => format!("invalid digest: {e}"),
        };
        RegistryError::new(ErrorCode::DigestInvalid, message)
    })
}

/// Maps storage failures of an upload: missing data means the upload is unknown (its
/// session outlived its data, e.g. a crash between creating the two).
fn storage_error(id: Uuid, e: StorageError) -> RegistryError {
    match e {
        StorageError::UploadNotFound(_) => upload_unknown(id),
        other => other.into(),
    }
}

fn to_i64(size: u64) -> RegistryResult<i64> {
    i64::try_from(size).map_err(|_| {
        RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("an upload of {size} bytes is too large"),
        )
    })
}

fn size_of(session: &UploadSession) -> u64 {
    // The column has CHECK (size >= 0).
    u64::try_from(session.size).unwrap_or(0)
}

fn upload_unknown(id: Uuid) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is unknown to this repository (never started, completed, cancelled or expired)"),
    )
}

fn range_invalid(name: &RepositoryName, id: Uuid, size: u64, message: String) -> RegistryError {
    RegistryError::new(ErrorCode::RangeInvalid, message)
        .with_header("location", upload_location(name, id))
        .with_header("range", range_value(size))
        .with_header("docker-upload-uuid", id.to_string())
}

fn upload_location(name: &RepositoryName, id: Uuid) -> String {
    format!("/v2/{}/blobs/uploads/{id}", name.as_str())
}

/// `0-<size-1>`, the bytes the registry has; `0-0` for an empty upload, as Distribution
/// answers and clients expect.
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// The answer to every step of an upload (202, or 204 for a status query): where to
/// continue and how much the registry has. Empty bodies get `Content-Length: 0` from
/// the server, except on 204, which must not carry one.
fn upload_accepted(status: StatusCode, name: &RepositoryName, id: Uuid, size: u64) -> Response {
    (
        status,
        [
            (header::LOCATION, upload_location(name, id)),
            (header::RANGE, range_value(size)),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                id.to_string(),
            ),
        ],
    )
        .into_response()
}

fn blob_created(name: &RepositoryName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                format!("/v2/{}/blobs/{digest}", name.as_str()),
            ),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_accepts_the_spec_and_rfc_forms() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range(" 100-100 "), Some((100, 100)));
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9)));
        assert_eq!(parse_content_range("bytes=5-9"), Some((5, 9)));
    }

    #[test]
    fn content_range_refuses_malformed_values() {
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "9-5",
            "a-b",
            "0-99/",
            "0-99/x",
            "+1-2",
            "1-+2",
            "0x1-2",
            "1--2",
            "bytes */100",
            "0-99999999999999999999999",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_upload_reports_range_zero_zero() {
        assert_eq!(range_value(0), "0-0");
        assert_eq!(range_value(1), "0-0");
        assert_eq!(range_value(100), "0-99");
    }

    #[tokio::test]
    async fn hashers_serialise_and_evict() {
        let hashers = UploadHashers::default();
        let id = Uuid::new_v4();
        let guard = hashers.lock(id).await;
        // Held entries survive eviction; idle ones do not.
        assert_eq!(hashers.evict_idle(Duration::ZERO), 0);
        let waiter = {
            let state = hashers.inner.lock().unwrap()[&id].state.clone();
            tokio::spawn(async move { state.lock_owned().await.is_some() })
        };
        drop(guard);
        assert!(!waiter.await.unwrap());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(hashers.evict_idle(Duration::from_millis(1)), 1);
        assert!(hashers.is_empty());
    }
}
