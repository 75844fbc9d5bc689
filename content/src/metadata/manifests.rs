//! Manifests: stored byte for byte with what they reference, looked up by tag or digest.
//!
//! A manifest row is written together with its references (`manifest_blobs`,
//! `manifest_children`) by [`store`], which the caller runs inside a transaction so that
//! a manifest is never visible without them. Reads join from the repository name so that
//! a pull is one round trip.

use serde_json::Value;
use sqlx::PgConnection;

use crate::digest::Digest;
use crate::metadata::repositories::RepositoryId;
use crate::name::{RepositoryName, Tag};

pub type ManifestId = i64;

/// A manifest as a pull serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    /// The exact bytes pushed; empty when the caller asked for metadata only.
    pub content: Vec<u8>,
}

/// What [`store`] needs to know about a manifest; the gateway fills it from
/// [`crate::manifest::ParsedManifest`].
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<Value>,
    pub content: &'a [u8],
    /// Config and layers: each must be linked to the repository.
    pub blobs: Vec<String>,
    /// An index's manifests: each must exist in the repository.
    pub children: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored (or already there: pushing the same bytes again is not an error).
    Stored(ManifestId),
    /// A referenced blob is not linked to the repository; nothing was written that the
    /// caller should commit.
    MissingBlob(String),
    /// A child manifest of an index is not in the repository.
    MissingChild(String),
}

/// One manifest that names another as its `subject`, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// Indexes in the repository that still list the manifest; it stays.
    ReferencedBy(Vec<String>),
}

/// Finds a manifest by digest. With `with_content` false the bytes are not fetched
/// (HEAD needs only the headers).
pub async fn find_by_digest(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    digest: &Digest,
    with_content: bool,
) -> Result<Option<StoredManifest>, sqlx::Error> {
    sqlx::query_as!(
        StoredManifest,
        r#"SELECT m.digest, m.media_type, m.size,
                  CASE WHEN $3 THEN m.content ELSE ''::bytea END AS "content!"
           FROM manifests m
           JOIN repositories r ON r.id = m.repository_id
           WHERE r.name = $1 AND m.digest = $2"#,
        repository.as_str(),
        digest.to_string(),
        with_content
    )
    .fetch_optional(conn)
    .await
}

/// Finds the manifest a tag points at, in one query (tag pulls are the hot path).
pub async fn find_by_tag(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    tag: &Tag,
    with_content: bool,
) -> Result<Option<StoredManifest>, sqlx::Error> {
    sqlx::query_as!(
        StoredManifest,
        r#"SELECT m.digest, m.media_type, m.size,
                  CASE WHEN $3 THEN m.content ELSE ''::bytea END AS "content!"
           FROM tags t
           JOIN repositories r ON r.id = t.repository_id
           JOIN manifests m ON m.id = t.manifest_id
           WHERE r.name = $1 AND t.name = $2"#,
        repository.as_str(),
        tag.as_str(),
        with_content
    )
    .fetch_optional(conn)
    .await
}

/// Stores a manifest and its references after checking that everything it references
/// is in the repository. Run it in a transaction and roll back on anything but
/// [`StoreOutcome::Stored`].
pub async fn store(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    manifest: &NewManifest<'_>,
) -> Result<StoreOutcome, sqlx::Error> {
    // FOR KEY SHARE (what foreign-key checks take) keeps the links and children we rely
    // on from being deleted before this transaction commits; concurrent pushes take the
    // same lock and do not wait for each other.
    if !manifest.blobs.is_empty() {
        let linked = sqlx::query_scalar!(
            r#"SELECT blob_digest FROM repository_blobs
               WHERE repository_id = $1 AND blob_digest = ANY($2::text[])
               FOR KEY SHARE"#,
            repository_id,
            &manifest.blobs
        )
        .fetch_all(&mut *conn)
        .await?;
        if let Some(missing) = first_missing(&manifest.blobs, &linked) {
            return Ok(StoreOutcome::MissingBlob(missing));
        }
    }
    let child_ids = if manifest.children.is_empty() {
        Vec::new()
    } else {
        let found = sqlx::query!(
            r#"SELECT id, digest FROM manifests
               WHERE repository_id = $1 AND digest = ANY($2::text[])
               FOR KEY SHARE"#,
            repository_id,
            &manifest.children
        )
        .fetch_all(&mut *conn)
        .await?;
        let digests: Vec<String> = found.iter().map(|r| r.digest.clone()).collect();
        if let Some(missing) = first_missing(&manifest.children, &digests) {
            return Ok(StoreOutcome::MissingChild(missing));
        }
        found.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };

    let id = insert_or_find(&mut *conn, repository_id, manifest).await?;

    // A manifest may list the same layer twice, and a re-push finds its rows already
    // there: DO NOTHING covers both.
    if !manifest.blobs.is_empty() {
        sqlx::query!(
            r#"INSERT INTO manifest_blobs (manifest_id, blob_digest)
               SELECT $1, d FROM unnest($2::text[]) AS d
               ON CONFLICT DO NOTHING"#,
            id,
            &manifest.blobs
        )
        .execute(&mut *conn)
        .await?;
    }
    if !child_ids.is_empty() {
        sqlx::query!(
            r#"INSERT INTO manifest_children (parent_id, child_id)
               SELECT $1, c FROM unnest($2::bigint[]) AS c
               ON CONFLICT DO NOTHING"#,
            id,
            &child_ids
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(StoreOutcome::Stored(id))
}

/// Inserts the manifest row, or finds it if these bytes are already in the repository
/// (pushing the same manifest again is not an error) and holds it FOR KEY SHARE, so
/// that a concurrent delete waits until we commit.
///
/// Not `ON CONFLICT DO UPDATE`: a no-op update of `digest` is a key update, which would
/// lock the row against the foreign-key checks of every concurrent push that tags or
/// lists it, and deadlock with them.
async fn insert_or_find(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    manifest: &NewManifest<'_>,
) -> Result<ManifestId, sqlx::Error> {
    let digest = manifest.digest.to_string();
    let size = i64::try_from(manifest.content.len()).unwrap_or(i64::MAX);
    // Each round either inserts or finds a committed row; a row deleted between the two
    // statements is the only reason for another round, so a few suffice.
    for _ in 0..3 {
        // DO NOTHING waits for a concurrent insert of the same digest to finish; the
        // SELECT that follows is a new snapshot and sees it if it committed.
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO manifests
                   (repository_id, digest, media_type, artifact_type, subject_digest,
                    annotations, size, content)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (repository_id, digest) DO NOTHING
               RETURNING id"#,
            repository_id,
            digest,
            manifest.media_type,
            manifest.artifact_type,
            manifest.subject.map(Digest::to_string),
            manifest.annotations,
            size,
            manifest.content
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = inserted {
            return Ok(id);
        }
        let existing = sqlx::query_scalar!(
            r#"SELECT id FROM manifests
               WHERE repository_id = $1 AND digest = $2
               FOR KEY SHARE"#,
            repository_id,
            digest
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = existing {
            return Ok(id);
        }
    }
    Err(sqlx::Error::RowNotFound)
}

/// The first of `wanted` (in manifest order, so the error names what the client listed
/// first) that is not in `found`.
fn first_missing(wanted: &[String], found: &[String]) -> Option<String> {
    wanted.iter().find(|w| !found.contains(w)).cloned()
}

/// Deletes a manifest by digest with its tags and references, unless an index in the
/// repository still lists it. Run it in a transaction.
pub async fn delete(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<DeleteOutcome, sqlx::Error> {
    // Locking the row first orders us against index pushes, which lock their children
    // FOR KEY SHARE: either the index committed before (and we see it below) or it waits
    // for us and then finds its child gone.
    let id = sqlx::query_scalar!(
        r#"SELECT m.id FROM manifests m
           JOIN repositories r ON r.id = m.repository_id
           WHERE r.name = $1 AND m.digest = $2
           FOR UPDATE OF m"#,
        repository.as_str(),
        digest.to_string()
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        return Ok(DeleteOutcome::NotFound);
    };
    let parents = sqlx::query_scalar!(
        r#"SELECT p.digest FROM manifest_children c
           JOIN manifests p ON p.id = c.parent_id
           WHERE c.child_id = $1
           ORDER BY p.digest"#,
        id
    )
    .fetch_all(&mut *conn)
    .await?;
    if !parents.is_empty() {
        return Ok(DeleteOutcome::ReferencedBy(parents));
    }
    sqlx::query!("DELETE FROM manifests WHERE id = $1", id)
        .execute(&mut *conn)
        .await?;
    Ok(DeleteOutcome::Deleted)
}

/// Manifests in the repository whose `subject` is `subject`, oldest first, optionally
/// only those whose artifact type is one of `artifact_types` (empty: no filter).
pub async fn referrers(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    subject: &Digest,
    artifact_types: &[String],
) -> Result<Vec<Referrer>, sqlx::Error> {
    sqlx::query_as!(
        Referrer,
        r#"SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
           FROM manifests m
           JOIN repositories r ON r.id = m.repository_id
           WHERE r.name = $1 AND m.subject_digest = $2
             AND (cardinality($3::text[]) = 0 OR m.artifact_type = ANY($3::text[]))
           ORDER BY m.id"#,
        repository.as_str(),
        subject.to_string(),
        artifact_types
    )
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_missing_keeps_manifest_order() {
        let wanted = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(first_missing(&wanted, &["a".to_owned()]), Some("b".into()));
        assert_eq!(first_missing(&wanted, &wanted), None);
        assert_eq!(first_missing(&[], &[]), None);
    }
}
