//! The artifact copy engine the `replicate` worker calls: one artifact (an image, an
//! index with its children, or any OCI artifact), its blobs and its referrers, from a
//! repository of one registry to a repository of another (or the same) registry.
//!
//! Order matters for what a half-finished copy leaves behind: blobs first, then each
//! manifest under its digest (children before their index), then the tag. A copy that
//! fails or is cancelled half-way leaves at most blobs and untagged manifests at the
//! destination, never a tag pointing at something incomplete.
//!
//! Manifests are copied as the exact bytes the source served, so the digests at the
//! destination are the source's. Blobs are opaque: the engine never looks inside them,
//! so artifacts with any `artifactType` or config media type copy like images.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_registry_client::{
    is_index, media_types, ClientError, Descriptor, Manifest, MountOutcome, RegistryClient,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// After cancellation, how long an upload may run on to finish the request it is
/// sending, so that it stops between requests and its session can be deleted (see
/// `UploadSession::upload_stoppable`); past that it is cut.
const STOP_GRACE: Duration = Duration::from_millis(600);
/// Smallest chunk a bandwidth-capped upload is cut into.
const MIN_CAPPED_CHUNK: u64 = 16 * 1024;

/// The chunk size of an upload: as configured, and under a bandwidth cap at most half a
/// second's worth, so that a cancelled upload reaches a request boundary within
/// [`STOP_GRACE`].
fn chunk_size(configured: Option<u64>, bytes_per_second: u64) -> Option<u64> {
    if bytes_per_second == 0 {
        return configured;
    }
    let capped = (bytes_per_second / 2).max(MIN_CAPPED_CHUNK);
    Some(configured.map_or(capped, |c| c.min(capped)))
}

/// How a copy runs.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Upload blobs in `PATCH`es of this many bytes (for registries or proxies that
    /// limit request sizes); `None`: one streamed `PUT` per blob.
    pub chunk_size: Option<u64>,
    /// Cap on the bytes per second read from the source for uploads; 0 = unlimited.
    pub bytes_per_second: u64,
    /// Cancels the copy: checked between steps and raced with every request, so an
    /// upload in flight stops at once (the client deletes the abandoned session).
    pub cancel: CancellationToken,
    /// Where blobs are known to be at the destination (digest → repository), for
    /// cross-repository mounts. The copy adds every blob it finds or puts at the
    /// destination; share one map between the copies of an execution (clones share)
    /// so later copies into other repositories mount instead of uploading.
    pub blob_locations: BlobLocations,
    /// Counts blob bytes handed to the destination, those of uploads that did not
    /// finish included (what a stopped or failed task moved). Clones share it.
    pub bytes_sent: Arc<AtomicU64>,
}

/// Digest → a repository at the destination registry known to hold that blob.
/// Cloning shares the map.
#[derive(Debug, Clone, Default)]
pub struct BlobLocations(Arc<Mutex<HashMap<String, String>>>);

impl BlobLocations {
    /// Records that `repository` at the destination holds `digest`.
    pub fn insert(&self, digest: &str, repository: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(digest.to_string(), repository.to_string());
        }
    }

    /// A repository known to hold `digest`, if any.
    pub fn get(&self, digest: &str) -> Option<String> {
        self.0.lock().ok().and_then(|map| map.get(digest).cloned())
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// The digest of the copied manifest (the top-level one).
    pub digest: String,
    /// The destination already had the manifest under the tag (or digest): nothing
    /// of the artifact itself was written (its referrers were still checked).
    pub up_to_date: bool,
    /// Blobs the destination already had.
    pub blobs_skipped: u64,
    /// Blobs linked from another repository of the destination.
    pub blobs_mounted: u64,
    /// Blobs uploaded, and their total size.
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Manifests pushed under their digest (children, the artifact, referrers); tags
    /// are not counted.
    pub manifests_pushed: u64,
    /// Referrers (manifests with the artifact, or one of its referrers, as subject)
    /// copied or found present.
    pub referrers: u64,
}

/// Which side of the copy a request failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Why a copy failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    /// The cancellation token fired.
    #[error("cancelled")]
    Cancelled,
    /// A request to one of the registries failed.
    #[error("{side} {repository}: {what}: {error}")]
    Registry {
        side: Side,
        repository: String,
        /// What was being done ("get manifest sha256:…", "upload blob sha256:…").
        what: String,
        error: ClientError,
    },
}

impl CopyError {
    /// Whether retrying the copy later may succeed: the registry's error was transient
    /// (rate limits, 5xx, connection trouble). Unauthorized, forbidden, a missing
    /// source artifact, protocol garbage and cancellation are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            CopyError::Cancelled => false,
            CopyError::Registry { error, .. } => error.is_transient(),
        }
    }

    /// How long the registry asked to wait before retrying (429 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CopyError::Cancelled => None,
            CopyError::Registry { error, .. } => error.retry_after(),
        }
    }

    /// The registry's error, when there is one.
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            CopyError::Cancelled => None,
            CopyError::Registry { error, .. } => Some(error),
        }
    }
}

/// Copies `reference` (a tag or a digest) of `source_repository` at `source` to
/// `dest_repository` at `dest`, tagged `dest_tag` (default: `reference` when it is a
/// tag; a digest reference without `dest_tag` is copied untagged), with its referrers.
pub async fn copy_artifact(
    source: &RegistryClient,
    source_repository: &str,
    reference: &str,
    dest: &RegistryClient,
    dest_repository: &str,
    dest_tag: Option<&str>,
    opts: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let mut copy = Copy {
        source,
        source_repository,
        dest,
        dest_repository,
        opts,
        report: CopyReport::default(),
        visited: HashSet::new(),
    };
    copy.run(reference, dest_tag).await?;
    Ok(copy.report)
}

struct Copy<'a> {
    source: &'a RegistryClient,
    source_repository: &'a str,
    dest: &'a RegistryClient,
    dest_repository: &'a str,
    opts: &'a CopyOptions,
    report: CopyReport,
    /// Manifests handled in this copy (referrer graphs may share nodes).
    visited: HashSet<String>,
}

impl Copy<'_> {
    async fn run(&mut self, reference: &str, dest_tag: Option<&str>) -> Result<(), CopyError> {
        let manifest = self.get_source_manifest(reference).await?;
        self.report.digest = manifest.digest.clone();
        let tag = dest_tag.or((!reference.contains(':')).then_some(reference));

        // Up to date when the destination's tag (or, untagged, the digest) is there.
        let dest_reference = tag.unwrap_or(&manifest.digest);
        let what = format!("head manifest {dest_reference}");
        let present = self
            .dest_step(
                &what,
                self.dest
                    .head_manifest(self.dest_repository, dest_reference),
            )
            .await?;
        if present.is_some_and(|info| info.digest == manifest.digest) {
            self.report.up_to_date = true;
            self.visited.insert(manifest.digest.clone());
        } else {
            // Pushed under its tag directly (the tag is what makes it visible, and it
            // goes last, after everything it references): one request fewer than a
            // push by digest followed by the tag.
            self.copy_manifest(&manifest, tag).await?;
        }
        self.copy_referrers(&manifest.digest).await
    }

    /// Copies a manifest fetched from the source, and what it points at, unless the
    /// destination has it already; pushes it under `tag`, or its digest.
    fn copy_manifest<'s>(
        &'s mut self,
        manifest: &'s Manifest,
        tag: Option<&'s str>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), CopyError>> + Send + 's>> {
        // Boxed: indexes recurse into their children.
        Box::pin(async move {
            if !self.visited.insert(manifest.digest.clone()) {
                return Ok(());
            }
            let content = manifest.content().map_err(|error| CopyError::Registry {
                side: Side::Source,
                repository: self.source_repository.to_string(),
                what: format!("read manifest {}", manifest.digest),
                error,
            })?;
            if is_index(&manifest.media_type) || !content.manifests.is_empty() {
                for child in &content.manifests {
                    if self.dest_has_manifest(&child.digest).await? {
                        self.visited.insert(child.digest.clone());
                        continue;
                    }
                    let child_manifest = self.get_source_manifest(&child.digest).await?;
                    self.copy_manifest(&child_manifest, None).await?;
                }
            }
            // An index may have blobs too (an artifact index with layers is legal).
            let blobs = content.config.iter().chain(content.layers.iter());
            for blob in blobs {
                self.copy_blob(blob).await?;
            }
            let reference = tag.unwrap_or(&manifest.digest).to_owned();
            self.put_manifest(manifest, &reference).await?;
            self.report.manifests_pushed += 1;
            Ok(())
        })
    }

    /// Copies the referrers of `digest` (and, in turn, theirs).
    fn copy_referrers<'s>(
        &'s mut self,
        digest: &'s str,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), CopyError>> + Send + 's>> {
        Box::pin(async move {
            let what = format!("list referrers of {digest}");
            let referrers = self
                .source_step(&what, self.source.referrers(self.source_repository, digest))
                .await?;
            for referrer in &referrers {
                if self.visited.contains(&referrer.digest) {
                    continue;
                }
                self.report.referrers += 1;
                if self.dest_has_manifest(&referrer.digest).await? {
                    self.visited.insert(referrer.digest.clone());
                } else {
                    let manifest = self.get_source_manifest(&referrer.digest).await?;
                    self.copy_manifest(&manifest, None).await?;
                }
                self.copy_referrers(&referrer.digest).await?;
            }
            if !referrers.is_empty() {
                self.update_referrers_tag(digest, &referrers).await?;
            }
            Ok(())
        })
    }

    /// A destination without the referrers API (distribution 2.8) only lists referrers
    /// through the referrers tag schema: an index tagged `<alg>-<hex>` of the subject,
    /// which whoever pushes a referrer there must maintain (OCI distribution spec,
    /// "Pushing Manifests with Subject"). When the destination does not list every
    /// copied referrer, they are added to that index.
    async fn update_referrers_tag(
        &self,
        digest: &str,
        referrers: &[Descriptor],
    ) -> Result<(), CopyError> {
        let what = format!("list referrers of {digest}");
        let mut listed = self
            .dest_step(&what, self.dest.referrers(self.dest_repository, digest))
            .await?;
        let missing: Vec<&Descriptor> = referrers
            .iter()
            .filter(|r| !listed.iter().any(|l| l.digest == r.digest))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        listed.extend(missing.into_iter().cloned());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": listed,
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| CopyError::Registry {
            side: Side::Destination,
            repository: self.dest_repository.to_string(),
            what: format!("encode the referrers index of {digest}"),
            error: ClientError::Invalid(e.to_string()),
        })?;
        // The spec's tag: `<alg>-<hex>`, cut to the 128 characters a tag may have.
        let tag: String = digest.replacen(':', "-", 1).chars().take(128).collect();
        let what = format!("put referrers index {tag}");
        self.dest_step(
            &what,
            self.dest.put_manifest(
                self.dest_repository,
                &tag,
                media_types::OCI_INDEX,
                bytes.into(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn dest_has_manifest(&self, digest: &str) -> Result<bool, CopyError> {
        let what = format!("head manifest {digest}");
        let info = self
            .dest_step(&what, self.dest.head_manifest(self.dest_repository, digest))
            .await?;
        Ok(info.is_some())
    }

    async fn get_source_manifest(&self, reference: &str) -> Result<Manifest, CopyError> {
        let what = format!("get manifest {reference}");
        self.source_step(
            &what,
            self.source.get_manifest(self.source_repository, reference),
        )
        .await
    }

    async fn put_manifest(&self, manifest: &Manifest, reference: &str) -> Result<(), CopyError> {
        let what = format!("put manifest {} as {reference}", manifest.digest);
        self.dest_step(
            &what,
            self.dest.put_manifest(
                self.dest_repository,
                reference,
                &manifest.media_type,
                manifest.bytes.clone(),
            ),
        )
        .await?;
        Ok(())
    }

    /// One blob: present → skip; known elsewhere at the destination → mount; else
    /// streamed from the source into an upload.
    async fn copy_blob(&mut self, blob: &Descriptor) -> Result<(), CopyError> {
        let digest = blob.digest.as_str();
        let locations = &self.opts.blob_locations;
        let what = format!("head blob {digest}");
        let present = self
            .dest_step(&what, self.dest.head_blob(self.dest_repository, digest))
            .await?;
        if let Some(size) = present.filter(|size| *size != blob.size) {
            // A registry that claims a blob with another size than the manifest's is
            // not one to trust with a skip (or a manifest push after it).
            return Err(CopyError::Registry {
                side: Side::Destination,
                repository: self.dest_repository.to_string(),
                what: what.clone(),
                error: ClientError::Protocol(format!(
                    "the destination reports {digest} with {size} bytes; the manifest says {}",
                    blob.size
                )),
            });
        }
        if present.is_some() {
            self.report.blobs_skipped += 1;
            locations.insert(digest, self.dest_repository);
            return Ok(());
        }

        let mut session = None;
        if let Some(from) = locations
            .get(digest)
            .filter(|from| from != self.dest_repository)
        {
            let what = format!("mount blob {digest} from {from}");
            let mounted = self
                .dest_step(
                    &what,
                    self.dest.mount_blob(self.dest_repository, digest, &from),
                )
                .await;
            match mounted {
                Ok(MountOutcome::Mounted) => {
                    self.report.blobs_mounted += 1;
                    locations.insert(digest, self.dest_repository);
                    return Ok(());
                }
                // The registry opened an upload instead: use it.
                Ok(MountOutcome::Upload(upload)) => session = Some(upload),
                Err(e) if e.is_transient() || matches!(e, CopyError::Cancelled) => return Err(e),
                // The hint was wrong (blob gone, no pull right there): upload instead.
                Err(e) => debug!(error = %e, "mount refused; uploading"),
            }
        }
        let session = match session {
            Some(session) => session,
            None => {
                let what = format!("start upload of blob {digest}");
                self.dest_step(&what, self.dest.start_upload(self.dest_repository))
                    .await?
            }
        };

        let what = format!("get blob {digest}");
        let stream = self
            .source_step(&what, self.source.get_blob(self.source_repository, digest))
            .await?;
        // The upload sees the source's errors as io::Error (`ClientError::Source` at
        // its end); the original is kept here so a reset source stays transient.
        let source_error: Arc<Mutex<Option<ClientError>>> = Arc::default();
        let body = {
            let source_error = source_error.clone();
            stream.map(move |item| {
                item.map_err(|e| {
                    let message = e.to_string();
                    if let Ok(mut slot) = source_error.lock() {
                        slot.get_or_insert(e);
                    }
                    io::Error::other(message)
                })
            })
        };
        let body = crate::throttle::throttle(body, self.opts.bytes_per_second).map({
            let sent = self.opts.bytes_sent.clone();
            move |item| {
                if let Ok(bytes) = &item {
                    sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                item
            }
        });
        let stop = AtomicBool::new(false);
        let chunk = chunk_size(self.opts.chunk_size, self.opts.bytes_per_second);
        let upload = session.upload_stoppable(digest, blob.size, body, chunk, &stop);
        let mut upload = std::pin::pin!(upload);
        let result = tokio::select! {
            biased;
            _ = self.opts.cancel.cancelled() => {
                // Let the request in flight end so the session can be deleted; then
                // (or when the grace is over) the upload future is dropped, which
                // deletes the session.
                stop.store(true, Ordering::Release);
                let _ = tokio::time::timeout(STOP_GRACE, &mut upload).await;
                return Err(CopyError::Cancelled);
            }
            result = &mut upload => result,
        };
        if let Err(error) = result {
            let source_failure = source_error.lock().ok().and_then(|mut slot| slot.take());
            return Err(match source_failure {
                Some(error) => CopyError::Registry {
                    side: Side::Source,
                    repository: self.source_repository.to_string(),
                    what: format!("read blob {digest}"),
                    error,
                },
                None => CopyError::Registry {
                    side: Side::Destination,
                    repository: self.dest_repository.to_string(),
                    what: format!("upload blob {digest}"),
                    error,
                },
            });
        }
        self.report.blobs_uploaded += 1;
        self.report.bytes_uploaded += blob.size;
        locations.insert(digest, self.dest_repository);
        Ok(())
    }

    async fn source_step<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, CopyError> {
        step(
            &self.opts.cancel,
            Side::Source,
            self.source_repository,
            what,
            request,
        )
        .await
    }

    async fn dest_step<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, CopyError> {
        step(
            &self.opts.cancel,
            Side::Destination,
            self.dest_repository,
            what,
            request,
        )
        .await
    }
}

/// Runs one request unless the copy is (or gets) cancelled; dropping the request
/// future on cancellation aborts it.
async fn step<T>(
    cancel: &CancellationToken,
    side: Side,
    repository: &str,
    what: &str,
    request: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, CopyError> {
    if cancel.is_cancelled() {
        return Err(CopyError::Cancelled);
    }
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(CopyError::Cancelled),
        result = request => result.map_err(|error| CopyError::Registry {
            side,
            repository: repository.to_string(),
            what: what.to_string(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_client_error() {
        let transient = CopyError::Registry {
            side: Side::Destination,
            repository: "a/b".into(),
            what: "put".into(),
            error: ClientError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            },
        };
        assert!(transient.is_transient());
        assert_eq!(transient.retry_after(), Some(Duration::from_secs(3)));
        for error in [
            ClientError::Unauthorized("no".into()),
            ClientError::Forbidden("no".into()),
            ClientError::NotFound("gone".into()),
            ClientError::Protocol("garbage".into()),
        ] {
            let permanent = CopyError::Registry {
                side: Side::Source,
                repository: "a/b".into(),
                what: "get".into(),
                error,
            };
            assert!(!permanent.is_transient(), "{permanent}");
            assert_eq!(permanent.retry_after(), None);
        }
        assert!(!CopyError::Cancelled.is_transient());
    }

    #[test]
    fn capped_uploads_are_cut_into_half_second_chunks() {
        assert_eq!(chunk_size(None, 0), None);
        assert_eq!(chunk_size(Some(10 << 20), 0), Some(10 << 20));
        assert_eq!(chunk_size(None, 4 << 20), Some(2 << 20));
        assert_eq!(chunk_size(Some(1 << 20), 4 << 20), Some(1 << 20));
        assert_eq!(chunk_size(None, 1000), Some(MIN_CAPPED_CHUNK));
    }

    #[test]
    fn blob_locations_are_shared_between_clones() {
        let locations = BlobLocations::default();
        let clone = locations.clone();
        clone.insert("sha256:aa", "team/one");
        assert_eq!(locations.get("sha256:aa").as_deref(), Some("team/one"));
        assert_eq!(locations.get("sha256:bb"), None);
    }
}
