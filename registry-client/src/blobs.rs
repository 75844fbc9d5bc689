//! Blobs: HEAD, streamed GET with digest verification, cross-repository mounts, and
//! uploads (monolithic or chunked) whose session is deleted at the remote when the
//! upload fails or is dropped half-way, so no partial upload stays behind.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{AbortHandle, Abortable};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::oneshot;
use tracing::debug;
use url::Url;

use crate::client::{expect_status, Request, RequestBody};
use crate::config::GatePermit;
use crate::manifests::{header_str, pull_scope, push_scope};
use crate::names::{check_digest, check_repository, Hasher};
use crate::{ClientError, RegistryClient};

/// A blob's content as it arrives, verified on the way: the last item is an error
/// (`Protocol`) instead of the end when the bytes do not hash to the digest asked for
/// or their count differs from the announced size. Consumers must not commit what
/// they received before the stream ended without error.
pub struct BlobStream {
    /// `Content-Length` of the response, when the registry sent one.
    size: Option<u64>,
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
    /// `None` once the stream ended (verified or failed).
    hasher: Option<Hasher>,
    digest: String,
    received: u64,
    /// The gate's permit, held until the body is read.
    _permit: GatePermit,
}

impl BlobStream {
    /// The blob's size as announced by the registry.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The digest the content is checked against.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("received", &self.received)
            .finish()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(hasher) = this.hasher.as_mut() else {
            return Poll::Ready(None);
        };
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                hasher.update(&chunk);
                this.received += chunk.len() as u64;
                if let Some(size) = this.size {
                    if this.received > size {
                        this.hasher = None;
                        return Poll::Ready(Some(Err(ClientError::Protocol(format!(
                            "blob {} is longer than its announced {size} bytes",
                            this.digest
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(ClientError::from_reqwest(e))))
            }
            Poll::Ready(None) => {
                let Some(hasher) = this.hasher.take() else {
                    return Poll::Ready(None);
                };
                if let Some(size) = this.size {
                    if this.received != size {
                        return Poll::Ready(Some(Err(ClientError::Connection(format!(
                            "blob {} ended after {} of {size} bytes",
                            this.digest, this.received
                        )))));
                    }
                }
                let actual = hasher.finish();
                if actual != this.digest {
                    return Poll::Ready(Some(Err(ClientError::Protocol(format!(
                        "blob content has digest {actual}, not {}",
                        this.digest
                    )))));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// What a mount attempt gave.
#[derive(Debug)]
pub enum MountOutcome {
    /// The registry linked the blob from the other repository: nothing to upload.
    Mounted,
    /// The registry could not (or would not) mount and opened an upload session
    /// instead; upload the blob through it (or drop it, which deletes it).
    Upload(UploadSession),
}

/// An open upload at the remote. Dropping it unfinished deletes it there (best effort,
/// on a spawned task), so a failed or cancelled upload leaves nothing behind.
pub struct UploadSession {
    client: RegistryClient,
    repository: String,
    /// Where the next request of the upload goes; `None` once finished or abandoned.
    location: Option<Url>,
    /// Ends the body of the request in flight. A dropped request future does not stop
    /// hyper from polling its body: a body waiting on a stalled source would keep the
    /// connection (and the registry's handler) busy forever.
    body_abort: Option<AbortHandle>,
    /// Resolves when that body has been dropped (its request is over on our side).
    body_done: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSession")
            .field("repository", &self.repository)
            .field("location", &self.location.as_ref().map(Url::as_str))
            .finish()
    }
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        if let Some(abort) = self.body_abort.take() {
            abort.abort();
        }
        let Some(location) = self.location.take() else {
            return;
        };
        // Outside a runtime (a test dropping it late) there is nobody to send it; the
        // registry's own upload purging gets it eventually.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let repository = std::mem::take(&mut self.repository);
        let body_done = self.body_done.take();
        runtime.spawn(async move {
            client
                .abandon_upload(&repository, location, body_done)
                .await;
        });
    }
}

/// The caller's blob stream, shared by the requests of one upload (each PATCH takes
/// the next chunk's bytes from it).
struct Source {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>,
    /// Bytes read past the end of the previous chunk.
    leftover: Option<Bytes>,
    /// Hash of everything handed to the requests, checked before the upload is closed.
    hasher: Option<Hasher>,
    /// Why the source failed, so the request error can be blamed on it, not the network.
    error: Option<String>,
}

type SharedSource = Arc<tokio::sync::Mutex<Source>>;

/// Longest wait for an abandoned upload's request to wind down before the DELETE.
const ABANDON_WAIT: Duration = Duration::from_secs(5);
/// Time for the registry to notice the dropped connection.
const ABANDON_SETTLE: Duration = Duration::from_millis(100);
/// Pause before the second DELETE of an abandoned upload.
const ABANDON_RETRY: Duration = Duration::from_millis(500);

/// The body of one upload request, with what is needed to stop it.
struct UploadBody {
    body: reqwest::Body,
    /// Ends the body early (short of its length, so the connection is abandoned
    /// rather than reused).
    abort: AbortHandle,
    /// Resolves once the body is dropped.
    done: oneshot::Receiver<()>,
}

/// A request body of the next `len` bytes of the source.
fn take_body(source: SharedSource, len: u64) -> UploadBody {
    let stream = futures::stream::unfold((source, len), |(source, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let item = {
            let mut guard = source.lock().await;
            let piece = match guard.leftover.take() {
                Some(bytes) => Some(Ok(bytes)),
                None => guard.stream.next().await,
            };
            match piece {
                None => {
                    let message = format!("blob stream ended {remaining} bytes short of its size");
                    guard.error = Some(message.clone());
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, message))
                }
                Some(Err(e)) => {
                    guard.error = Some(e.to_string());
                    Err(e)
                }
                Some(Ok(mut bytes)) => {
                    if bytes.len() as u64 > remaining {
                        guard.leftover = Some(bytes.split_off(remaining as usize));
                    }
                    if let Some(hasher) = guard.hasher.as_mut() {
                        hasher.update(&bytes);
                    }
                    Ok(bytes)
                }
            }
        };
        let remaining = match &item {
            Ok(bytes) => remaining - bytes.len() as u64,
            Err(_) => 0,
        };
        Some((item, (source, remaining)))
    });
    let (abort, registration) = AbortHandle::new_pair();
    let (done_tx, done) = oneshot::channel::<()>();
    let stream = Abortable::new(stream, registration).map(move |item| {
        // Owned by the stream, so dropped (and `done` resolved) with it.
        let _ = &done_tx;
        item
    });
    UploadBody {
        body: reqwest::Body::wrap_stream(stream),
        abort,
        done,
    }
}

impl UploadSession {
    /// The upload's current URL.
    pub fn location(&self) -> Option<&Url> {
        self.location.as_ref()
    }

    /// Uploads the blob through this session: one `PUT` with the streamed body, or,
    /// with `chunk_size`, `PATCH`es of at most that many bytes and a closing `PUT`.
    /// Exactly `size` bytes are read from `body`; a shorter stream or one whose content
    /// does not hash to `digest` fails with `Source`. On any failure, and when the
    /// future is dropped, the session is deleted at the remote.
    pub async fn upload<S>(
        self,
        digest: &str,
        size: u64,
        body: S,
        chunk_size: Option<u64>,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    {
        let never = AtomicBool::new(false);
        self.upload_stoppable(digest, size, body, chunk_size, &never)
            .await
    }

    /// Like [`UploadSession::upload`], but once `stop` is set the upload ends at the
    /// next request boundary (before the next `PATCH` or the closing `PUT`) with
    /// [`ClientError::Cancelled`], and the session is deleted. A request is never cut
    /// mid-body this way, so registries that refuse to delete an upload whose last
    /// request was cut (distribution 2.8 checks the upload's size against the offset
    /// in its `_state`) delete it cleanly. Callers that must stop at once drop the
    /// future instead.
    pub async fn upload_stoppable<S>(
        mut self,
        digest: &str,
        size: u64,
        body: S,
        chunk_size: Option<u64>,
        stop: &AtomicBool,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    {
        let stopped = || ClientError::Cancelled("upload stopped between requests".into());
        let algorithm = check_digest(digest)?;
        let source: SharedSource = Arc::new(tokio::sync::Mutex::new(Source {
            stream: Box::pin(body),
            leftover: None,
            hasher: Some(Hasher::new(algorithm)),
            error: None,
        }));
        let chunk_size = chunk_size.filter(|c| *c > 0 && *c < size);
        let mut offset = 0;
        if let Some(chunk_size) = chunk_size {
            while offset < size {
                if stop.load(Ordering::Acquire) {
                    return Err(stopped());
                }
                let len = chunk_size.min(size - offset);
                self.patch(&source, offset, len).await?;
                offset += len;
            }
        }
        if stop.load(Ordering::Acquire) {
            return Err(stopped());
        }
        // The closing PUT carries the rest (all of it when not chunked).
        let rest = size - offset;
        let location = self.current_location()?;
        let mut url = location.clone();
        url.query_pairs_mut().append_pair("digest", digest);
        let mut request = Request::new(Method::PUT, url, vec![push_scope(&self.repository)]);
        request
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(rest));
        request.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        request.body = if rest == 0 {
            RequestBody::Empty
        } else {
            RequestBody::Stream(Some(self.track(take_body(source.clone(), rest))))
        };
        let result = self.client.send(request).await;
        let (response, _permit) = blame_source(&source, result)?;
        // The content must be what the caller said, whatever the registry thinks.
        let actual = source.lock().await.hasher.take().map(Hasher::finish);
        if actual.as_deref() != Some(digest) {
            return Err(ClientError::Source(format!(
                "blob content hashes to {}, not the declared {digest}",
                actual.unwrap_or_default()
            )));
        }
        let response = match expect_status(response, &[StatusCode::CREATED]).await {
            Ok(response) => response,
            Err(e) => return Err(source_error(&source, e)),
        };
        if let Some(stored) = header_str(response.headers(), "docker-content-digest") {
            if stored != digest {
                return Err(ClientError::Protocol(format!(
                    "registry stored the blob as {stored}, not {digest}"
                )));
            }
        }
        // Closed: nothing to delete any more.
        self.location = None;
        Ok(())
    }

    /// Deletes the session at the remote now (instead of on drop).
    pub async fn abandon(mut self) -> Result<(), ClientError> {
        match self.location.take() {
            Some(location) => match self.client.delete_upload(&self.repository, location).await {
                // Gone already (purged, or never written to): what we wanted.
                Ok(()) | Err(ClientError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }

    /// Remembers how to stop `body`, the one now being sent; returns it.
    fn track(&mut self, body: UploadBody) -> reqwest::Body {
        self.body_abort = Some(body.abort);
        self.body_done = Some(body.done);
        body.body
    }

    fn current_location(&self) -> Result<&Url, ClientError> {
        self.location
            .as_ref()
            .ok_or_else(|| ClientError::Invalid("upload session already closed".into()))
    }

    /// One `PATCH` of `len` bytes at `offset`.
    async fn patch(
        &mut self,
        source: &SharedSource,
        offset: u64,
        len: u64,
    ) -> Result<(), ClientError> {
        let url = self.current_location()?.clone();
        let mut request = Request::new(Method::PATCH, url, vec![push_scope(&self.repository)]);
        let range = format!("{offset}-{}", offset + len - 1);
        request.headers.insert(
            "content-range",
            HeaderValue::from_str(&range).map_err(|e| ClientError::Invalid(e.to_string()))?,
        );
        request
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        request.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        request.body = RequestBody::Stream(Some(self.track(take_body(source.clone(), len))));
        let result = self.client.send(request).await;
        let (response, _permit) = blame_source(source, result)?;
        let response =
            match expect_status(response, &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT]).await {
                Ok(response) => response,
                Err(e) => return Err(source_error(source, e)),
            };
        // The registry says how much it holds; anything but what we sent means the
        // upload is not what we think it is.
        if let Some(range) = header_str(response.headers(), "range") {
            let end = range
                .rsplit('-')
                .next()
                .and_then(|e| e.trim().parse::<u64>().ok());
            if end != Some(offset + len - 1) {
                return Err(ClientError::Protocol(format!(
                    "after sending bytes {offset}-{} the registry holds range {range:?}",
                    offset + len - 1
                )));
            }
        }
        self.location = Some(upload_location(&response, self.client.base_url())?);
        Ok(())
    }
}

/// A failed request whose body stream failed is the source's fault, not the network's.
fn blame_source<T>(
    source: &SharedSource,
    result: Result<T, ClientError>,
) -> Result<T, ClientError> {
    match result {
        Ok(value) => Ok(value),
        Err(e) => Err(source_error(source, e)),
    }
}

/// `error`, or the source's failure when the source failed.
fn source_error(source: &SharedSource, error: ClientError) -> ClientError {
    // try_lock: a body still being sent (the registry answered early) may hold the
    // lock while it waits on the caller's stream; then the source has not failed.
    match source.try_lock().ok().and_then(|mut s| s.error.take()) {
        Some(message) => ClientError::Source(message),
        None => error,
    }
}

/// The upload URL from a `Location` header, resolved against the request URL. An
/// upload on another host is refused: our credentials would go there.
fn upload_location(response: &Response, base: &Url) -> Result<Url, ClientError> {
    let location = header_str(response.headers(), LOCATION.as_str())
        .ok_or_else(|| ClientError::Protocol("upload response without a Location".into()))?;
    let url = response
        .url()
        .join(location)
        .map_err(|e| ClientError::Protocol(format!("bad upload Location {location:?}: {e}")))?;
    if url.origin() != base.origin() {
        return Err(ClientError::Protocol(format!(
            "upload Location points to another host: {url}"
        )));
    }
    Ok(url)
}

impl RegistryClient {
    /// `HEAD` a blob: its size, or `None` when the repository does not have it.
    pub async fn head_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<u64>, ClientError> {
        let url = blob_url(self, repository, digest)?;
        let (response, _permit) = self
            .send(Request::new(
                Method::HEAD,
                url,
                vec![pull_scope(repository)],
            ))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = expect_status(response, &[StatusCode::OK]).await?;
        if let Some(stored) = header_str(response.headers(), "docker-content-digest") {
            if stored != digest {
                return Err(ClientError::Protocol(format!(
                    "asked for blob {digest}, registry answered for {stored}"
                )));
            }
        }
        // Read from the header: reqwest reports a HEAD response's (empty) body length.
        header_str(response.headers(), CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ClientError::Protocol("blob HEAD without a Content-Length".into()))
    }

    /// `GET` a blob as a stream, verified against `digest` as it arrives (see
    /// [`BlobStream`]). Nothing is buffered beyond the chunk in flight.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<BlobStream, ClientError> {
        let algorithm = check_digest(digest)?;
        let url = blob_url(self, repository, digest)?;
        let (response, permit) = self
            .send(Request::new(Method::GET, url, vec![pull_scope(repository)]))
            .await?;
        let response = expect_status(response, &[StatusCode::OK]).await?;
        let size =
            header_str(response.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        Ok(BlobStream {
            size,
            inner: Box::pin(response.bytes_stream()),
            hasher: Some(Hasher::new(algorithm)),
            digest: digest.to_string(),
            received: 0,
            _permit: permit,
        })
    }

    /// Asks the registry to link `digest` from `from_repository` into `repository`
    /// without uploading it. Registries that cannot answer with an upload session.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &str,
        from_repository: &str,
    ) -> Result<MountOutcome, ClientError> {
        check_repository(repository)?;
        check_repository(from_repository)?;
        check_digest(digest)?;
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from_repository);
        let scopes = vec![push_scope(repository), pull_scope(from_repository)];
        let mut request = Request::new(Method::POST, url, scopes);
        request
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(0u64));
        let (response, _permit) = self.send(request).await?;
        let response =
            expect_status(response, &[StatusCode::CREATED, StatusCode::ACCEPTED]).await?;
        if response.status() == StatusCode::CREATED {
            if let Some(stored) = header_str(response.headers(), "docker-content-digest") {
                if stored != digest {
                    return Err(ClientError::Protocol(format!(
                        "mounted blob {digest} but the registry says {stored}"
                    )));
                }
            }
            return Ok(MountOutcome::Mounted);
        }
        let location = upload_location(&response, self.base_url())?;
        Ok(MountOutcome::Upload(UploadSession {
            client: self.clone(),
            repository: repository.to_string(),
            location: Some(location),
            body_abort: None,
            body_done: None,
        }))
    }

    /// Opens an upload session (`POST /v2/<name>/blobs/uploads/`).
    pub async fn start_upload(&self, repository: &str) -> Result<UploadSession, ClientError> {
        check_repository(repository)?;
        let url = self.url(&format!("v2/{repository}/blobs/uploads/"))?;
        let mut request = Request::new(Method::POST, url, vec![push_scope(repository)]);
        request
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(0u64));
        let (response, _permit) = self.send(request).await?;
        let response = expect_status(response, &[StatusCode::ACCEPTED]).await?;
        let location = upload_location(&response, self.base_url())?;
        Ok(UploadSession {
            client: self.clone(),
            repository: repository.to_string(),
            location: Some(location),
            body_abort: None,
            body_done: None,
        })
    }

    /// Uploads a blob of `size` bytes read from `body`: a session, then one streamed
    /// `PUT` (monolithic) or `PATCH`es of `chunk_size` bytes. See
    /// [`UploadSession::upload`]. The body is the place for a bandwidth cap: wrap the
    /// stream in one that paces its items.
    pub async fn push_blob<S>(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        body: S,
        chunk_size: Option<u64>,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    {
        check_digest(digest)?;
        let session = self.start_upload(repository).await?;
        session.upload(digest, size, body, chunk_size).await
    }

    /// Deletes an abandoned upload, best effort. Waits first for the request that was
    /// sending its body to end on our side: a registry still writing that request
    /// (distribution 2.8 does) answers the `DELETE` with an offset mismatch and may
    /// keep the partial data. For the same reason a refused `DELETE` is tried once
    /// more, a moment later; a second 404 then only confirms the upload is gone.
    async fn abandon_upload(
        &self,
        repository: &str,
        location: Url,
        body_done: Option<oneshot::Receiver<()>>,
    ) {
        if let Some(done) = body_done {
            let _ = tokio::time::timeout(ABANDON_WAIT, done).await;
            tokio::time::sleep(ABANDON_SETTLE).await;
        }
        for attempt in 1..=2 {
            if attempt > 1 {
                tokio::time::sleep(ABANDON_RETRY).await;
            }
            match self.delete_upload(repository, location.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    debug!(%location, attempt, error = %e, "could not delete an abandoned upload");
                }
            }
        }
    }

    /// `DELETE` an upload session.
    pub(crate) async fn delete_upload(
        &self,
        repository: &str,
        location: Url,
    ) -> Result<(), ClientError> {
        // distribution (and Berth) map every DELETE to the `delete` action, upload
        // cancels included; `pull,push` as well, for registries that ask for those.
        let scopes = vec![
            push_scope(repository),
            format!("repository:{repository}:delete"),
        ];
        let mut request = Request::new(Method::DELETE, location, scopes);
        request.cleanup = true;
        let (response, _permit) = self.send(request).await?;
        expect_status(
            response,
            &[StatusCode::NO_CONTENT, StatusCode::OK, StatusCode::ACCEPTED],
        )
        .await?;
        Ok(())
    }
}

fn blob_url(client: &RegistryClient, repository: &str, digest: &str) -> Result<Url, ClientError> {
    check_repository(repository)?;
    check_digest(digest)?;
    client.url(&format!("v2/{repository}/blobs/{digest}"))
}
