//! Event-based replication: every tag that moves (a push, a retag) in a repository an
//! enabled event-based push policy selects becomes one execution of that policy with
//! one copy task; deletions become deletion tasks for policies that replicate them.
//!
//! Idempotent: the execution's trigger key is the event id and the policy id, so a
//! redelivered event plans nothing twice.

use async_trait::async_trait;
use berth_access::registries;
use berth_content::manifest::artifact_kind;
use berth_events::envelope::Envelope;
use berth_events::jobs::{executions, NewExecution, Trigger};
use berth_events::runtime::{EventContext, EventHandler, Failure};
use berth_events::{ArtifactRef, Event};
use berth_replication::naming::destination_repository;
use berth_replication::{store, Candidate, Direction, Policy};
use serde_json::json;
use sqlx::PgPool;

use super::clients::path_components;
use super::task::{Operation, TaskPayload, Way};
use super::{resource_type, KIND};

pub struct ReplicateEvents;

/// What an event asks of the policies.
struct Change {
    artifact: ArtifactRef,
    tag: Option<String>,
    operation: Operation,
    actor: String,
    /// For a referrer pushed after its subject: the subject's tags, which tag filters
    /// judge it by (Harbor's rule for accessories).
    subject_tags: Option<Vec<String>>,
}

impl Change {
    /// What `event` asks for; `None` when it asks nothing of replication.
    async fn of(event: Event, db: &PgPool) -> Result<Option<Change>, sqlx::Error> {
        // A push by tag emits `artifact.pushed` and, when the tag changed, `tag.moved`;
        // retags through the API emit only `tag.moved`. Reacting to `tag.moved` copies
        // every change once and nothing that did not change. Untagged pushes are an
        // index's children (copied with their index) or referrers: a referrer pushed
        // after its subject becomes a copy of the subject by digest, which finds the
        // subject up to date at the destination and copies its new referrers.
        if let Event::ArtifactPushed {
            artifact,
            tag: None,
            actor,
            ..
        } = event
        {
            let Some(subject) = subject_of(db, &artifact).await? else {
                return Ok(None);
            };
            let subject_tags = tags_of(db, &artifact.repository, &subject).await?;
            return Ok(Some(Change {
                artifact: ArtifactRef {
                    digest: subject,
                    ..artifact
                },
                tag: None,
                operation: Operation::Copy,
                actor,
                subject_tags: Some(subject_tags),
            }));
        }
        Ok(Change::of_tagged(event))
    }

    fn of_tagged(event: Event) -> Option<Change> {
        match event {
            Event::TagMoved {
                artifact,
                tag,
                actor,
                ..
            } => Some(Change {
                artifact,
                tag: Some(tag),
                operation: Operation::Copy,
                actor,
                subject_tags: None,
            }),
            Event::ArtifactDeleted { artifact, actor } => Some(Change {
                artifact,
                tag: None,
                operation: Operation::Deletion,
                actor,
                subject_tags: None,
            }),
            Event::TagDeleted {
                artifact,
                tag,
                actor,
            } => Some(Change {
                artifact,
                tag: Some(tag),
                operation: Operation::Deletion,
                actor,
                subject_tags: None,
            }),
            _ => None,
        }
    }
}

#[async_trait]
impl EventHandler for ReplicateEvents {
    async fn handle(
        &self,
        event: Event,
        envelope: &Envelope,
        ctx: &EventContext,
    ) -> Result<(), Failure> {
        let transient = |e: &dyn std::fmt::Display| Failure::transient(format!("planning: {e}"));
        let Some(change) = Change::of(event, &ctx.db)
            .await
            .map_err(|e| transient(&e))?
        else {
            return Ok(());
        };
        // Replications the worker itself made into Berth (pull mode) are not pushed on
        // by the same worker's event policies unless a policy says so: that is how a
        // pull policy and a push policy to the same endpoint would loop forever.
        if change.actor == super::clients::SUBJECT {
            return Ok(());
        }
        let policies = store::event_based(&ctx.db)
            .await
            .map_err(|e| transient(&e))?;
        let mut kind: Option<&'static str> = None;
        for policy in policies {
            let Direction::Push { dest_registry_id } = policy.direction else {
                continue;
            };
            if change.operation == Operation::Deletion && !policy.replicate_deletion {
                continue;
            }
            let filters = match policy.checked_filters() {
                Ok(filters) => filters,
                Err(e) => {
                    tracing::warn!(policy_id = policy.id, error = %e, "policy filters do not parse; skipped");
                    continue;
                }
            };
            let repository = &change.artifact.repository;
            if !filters.repository_matches(repository).unwrap_or(false) {
                continue;
            }
            let kind = match kind {
                Some(kind) => kind,
                None => {
                    let found = stored_kind(&ctx.db, &change.artifact)
                        .await
                        .map_err(|e| transient(&e))?;
                    *kind.insert(found)
                }
            };
            let tags: Vec<String> = change.tag.iter().cloned().collect();
            let selected = filters
                .select(&Candidate {
                    kind,
                    tags: &tags,
                    subject_tags: change.subject_tags.as_deref(),
                })
                .unwrap_or(None);
            let Some(selected) = selected else { continue };
            if let Some(tag) = &change.tag {
                if !selected.contains(tag) {
                    continue;
                }
            }
            self.plan(ctx, envelope, &policy, dest_registry_id, &change, kind)
                .await?;
        }
        Ok(())
    }
}

impl ReplicateEvents {
    async fn plan(
        &self,
        ctx: &EventContext,
        envelope: &Envelope,
        policy: &Policy,
        registry_id: i64,
        change: &Change,
        kind: &str,
    ) -> Result<(), Failure> {
        let transient = |e: &dyn std::fmt::Display| Failure::transient(format!("planning: {e}"));
        let mut conn = ctx.db.acquire().await.map_err(|e| transient(&e))?;
        let Some(registry) = registries::find(&mut conn, registry_id)
            .await
            .map_err(|e| transient(&e))?
        else {
            tracing::warn!(
                policy_id = policy.id,
                registry_id,
                "the policy's endpoint is gone; skipped"
            );
            return Ok(());
        };
        drop(conn);
        let destination = match destination_repository(
            &change.artifact.repository,
            &policy.dest_namespace,
            policy.dest_namespace_replace_count,
            path_components(registry.kind),
        ) {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(policy_id = policy.id, error = %e, "cannot name the destination; skipped");
                return Ok(());
            }
        };
        let task = TaskPayload::new(
            policy.id,
            registry_id,
            Way::Push,
            change.operation,
            resource_type(kind),
            &change.artifact.repository,
            change.tag.as_deref(),
            &change.artifact.digest,
            &destination,
        );
        let trigger_key = format!("event:{}:policy:{}", envelope.id, policy.id);
        let mut tx = ctx.db.begin().await.map_err(|e| transient(&e))?;
        let execution = executions::create(
            &mut tx,
            &NewExecution {
                kind: KIND,
                vendor_id: policy.id,
                trigger: Trigger::Event,
                trigger_key: Some(&trigger_key),
                extra_attrs: json!({
                    "policy_id": policy.id,
                    "event_id": envelope.id.to_string(),
                    "event_type": envelope.type_name,
                    "resource": task.source_resource,
                }),
                created_by: &change.actor,
            },
        )
        .await
        .map_err(|e| transient(&e))?;
        let Some(execution_id) = execution else {
            // Delivered before: planned then.
            return Ok(());
        };
        task.enqueue(&mut tx, execution_id, &ctx.source)
            .await
            .map_err(|e| transient(&e))?;
        tx.commit().await.map_err(|e| transient(&e))?;
        tracing::info!(
            policy_id = policy.id,
            execution_id,
            resource = %task.source_resource,
            "planned a replication"
        );
        Ok(())
    }
}

/// The subject of a stored manifest, if it is a referrer.
async fn subject_of(db: &PgPool, artifact: &ArtifactRef) -> Result<Option<String>, sqlx::Error> {
    let subject: Option<Option<String>> = sqlx::query_scalar(
        "SELECT m.subject_digest FROM manifests m
         JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = $1 AND m.digest = $2",
    )
    .bind(&artifact.repository)
    .bind(&artifact.digest)
    .fetch_optional(db)
    .await?;
    Ok(subject.flatten())
}

/// The tags pointing at `digest` in `repository`.
async fn tags_of(db: &PgPool, repository: &str, digest: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT t.name FROM tags t
         JOIN manifests m ON m.id = t.manifest_id
         JOIN repositories r ON r.id = t.repository_id
         WHERE r.name = $1 AND m.digest = $2
         ORDER BY t.name",
    )
    .bind(repository)
    .bind(digest)
    .fetch_all(db)
    .await
}

/// Harbor's artifact type of a stored manifest; `UNKNOWN` once it is gone (a deletion).
async fn stored_kind(db: &PgPool, artifact: &ArtifactRef) -> Result<&'static str, sqlx::Error> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT m.media_type, m.artifact_type FROM manifests m
         JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = $1 AND m.digest = $2",
    )
    .bind(&artifact.repository)
    .bind(&artifact.digest)
    .fetch_optional(db)
    .await?;
    Ok(row.map_or("UNKNOWN", |(media_type, config)| {
        artifact_kind(&media_type, config.as_deref())
    }))
}
