//! Planning of manual and scheduled executions: list the policy's source under its
//! filters and enqueue one copy task per selected tag (an untagged artifact, selected,
//! by digest). The planning task runs on the kind's own consumer; the copy tasks go to
//! the endpoint's consumer like event-based ones.
//!
//! Push mode lists Berth's registry, pull mode the remote endpoint's (its catalog, then
//! each repository's tags), both through the same client code.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use berth_content::manifest::artifact_kind;
use berth_events::runtime::{Failure, JobHandler, TaskContext};
use berth_registry_client::{ClientError, RegistryClient};
use berth_replication::naming::{destination_repository, PathComponents};
use berth_replication::{store, Candidate, Direction, Filters, Policy};

use super::copy::client_failure;
use super::task::{Operation, TaskPayload, Way};
use super::{resource_type, Shared};

/// Repositories asked for per catalog page.
const CATALOG_PAGE: u32 = 500;

pub struct PlanJob {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl JobHandler for PlanJob {
    async fn run(&self, ctx: &TaskContext) -> Result<(), Failure> {
        let policy_id = ctx
            .task
            .payload
            .get("policy_id")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| Failure::permanent("not a planning task: no policy_id"))?;
        let policy = store::get(&ctx.db, policy_id)
            .await
            .map_err(|e| Failure::transient(format!("reading the policy: {e}")))?
            .ok_or_else(|| {
                Failure::permanent(format!("replication policy {policy_id} no longer exists"))
            })?;
        if !policy.enabled {
            ctx.set_outcome("the policy is disabled; nothing planned");
            return Ok(());
        }
        let filters = policy
            .checked_filters()
            .map_err(|e| Failure::permanent(e.to_string()))?;
        let registry_id = policy.direction.remote_registry_id();
        let remote = self
            .shared
            .clients
            .remote(registry_id, ctx.cancel.clone())
            .await
            .map_err(|e| Failure::permanent(e.to_string()))?;
        let local = self.shared.clients.local();
        let (source, way, accepts) = match policy.direction {
            Direction::Push { .. } => (&local, Way::Push, remote.path_components),
            Direction::Pull { .. } => (&remote.client, Way::Pull, PathComponents::Any),
        };
        ctx.log(format!(
            "planning policy {} ({}): listing {}",
            policy.id,
            policy.name,
            match way {
                Way::Push => "Berth".to_owned(),
                Way::Pull => format!("endpoint {}", remote.name),
            }
        ));
        let planned = plan(ctx, &policy, &filters, source, way, registry_id, accepts).await?;

        let mut tx = ctx
            .db
            .begin()
            .await
            .map_err(|e| Failure::transient(format!("planning: {e}")))?;
        let mut added = 0;
        for task in &planned {
            if task
                .enqueue(&mut tx, ctx.task.execution_id, &self.shared.source)
                .await
                .map_err(|e| Failure::transient(format!("planning: {e}")))?
                .is_some()
            {
                added += 1;
            }
        }
        tx.commit()
            .await
            .map_err(|e| Failure::transient(format!("planning: {e}")))?;
        let message = format!("planned {added} copy tasks");
        ctx.log(&message);
        ctx.set_outcome(message);
        Ok(())
    }
}

/// What the policy selects at the source now, as tasks.
async fn plan(
    ctx: &TaskContext,
    policy: &Policy,
    filters: &Filters,
    source: &RegistryClient,
    way: Way,
    registry_id: i64,
    accepts: PathComponents,
) -> Result<Vec<TaskPayload>, Failure> {
    let listing = |e: ClientError| client_failure("listing", "the source", e);
    let repositories = source.catalog(CATALOG_PAGE).await.map_err(listing)?;
    let mut planned = Vec::new();
    for repository in repositories {
        if ctx.cancel.is_cancelled() {
            return Err(Failure::transient("cancelled"));
        }
        match filters.repository_matches(&repository) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => return Err(Failure::permanent(e.to_string())),
        }
        let destination = destination_repository(
            &repository,
            &policy.dest_namespace,
            policy.dest_namespace_replace_count,
            accepts,
        )
        .map_err(|e| Failure::permanent(e.to_string()))?;
        // Tags grouped by the artifact they point at: tag filters judge an artifact by
        // its tags, as Harbor's do.
        let mut artifacts: BTreeMap<String, (&'static str, Vec<String>)> = BTreeMap::new();
        for tag in source.tags(&repository).await.map_err(listing)? {
            let manifest = match source.get_manifest(&repository, &tag).await {
                Ok(manifest) => manifest,
                // Deleted between the listing and now.
                Err(ClientError::NotFound(_)) => continue,
                Err(e) => return Err(listing(e)),
            };
            let config = manifest
                .content()
                .ok()
                .and_then(|c| c.config.map(|d| d.media_type));
            let kind = artifact_kind(&manifest.media_type, config.as_deref());
            artifacts
                .entry(manifest.digest.clone())
                .or_insert_with(|| (kind, Vec::new()))
                .1
                .push(tag);
        }
        for (digest, (kind, tags)) in artifacts {
            let selected = filters
                .select(&Candidate {
                    kind,
                    tags: &tags,
                    subject_tags: None,
                })
                .map_err(|e| Failure::permanent(e.to_string()))?;
            let Some(selected) = selected else { continue };
            let task = |tag: Option<&str>| {
                TaskPayload::new(
                    policy.id,
                    registry_id,
                    way,
                    Operation::Copy,
                    resource_type(kind),
                    &repository,
                    tag,
                    &digest,
                    &destination,
                )
            };
            if selected.is_empty() {
                planned.push(task(None));
            }
            for tag in &selected {
                planned.push(task(Some(tag)));
            }
        }
    }
    Ok(planned)
}
