//! The transactional outbox: every committed change that others react to leaves exactly
//! one event row, written in the change's own transaction; refused or rolled-back
//! changes leave none.

use berth_content::Digest;
use berth_events::{ArtifactRef, Envelope, Event};
use serde_json::json;

use crate::helpers::{
    assert_oci_error, config_blob, expect_status, manifest_over, TestApp, ADMIN_PASSWORD,
    OCI_MANIFEST,
};

/// Every outbox row in write order, as (NATS subject, event), after checking that the
/// row's event id is its envelope's id (the future `Nats-Msg-Id`).
async fn events(app: &TestApp) -> Vec<(String, Event)> {
    let rows: Vec<(uuid::Uuid, String, String, Vec<u8>)> =
        sqlx::query_as("SELECT event_id, subject, ordering_key, payload FROM outbox ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(event_id, subject, ordering_key, payload)| {
            let envelope = Envelope::parse(&payload).expect("the payload is a CloudEvent");
            assert_eq!(envelope.id, event_id);
            assert_eq!(envelope.source, "/berth/gateway");
            let event = envelope.event().expect("a known event type");
            assert_eq!(ordering_key, event.ordering_key());
            assert!(event.artifact().is_some());
            (subject, event)
        })
        .collect()
}

fn artifact(repository: &str, digest: &Digest) -> ArtifactRef {
    ArtifactRef {
        project: repository.split('/').next().unwrap().to_owned(),
        repository: repository.to_owned(),
        digest: digest.to_string(),
    }
}

#[tokio::test]
async fn every_committed_push_writes_its_events_and_a_refused_push_none() {
    let app = TestApp::spawn().await;
    let repo = "team/app";
    let (first_manifest, first) = app.push_image(repo, "1.0", &[b"layer one"]).await;
    let pushed = |digest: &Digest| Event::ArtifactPushed {
        artifact: artifact(repo, digest),
        media_type: OCI_MANIFEST.to_owned(),
        tag: Some("1.0".to_owned()),
        actor: "unrestricted".to_owned(),
    };
    assert_eq!(
        events(&app).await,
        vec![
            (
                "berth.events.artifact.pushed.team.app".to_owned(),
                pushed(&first)
            ),
            (
                "berth.events.tag.moved.team.app".to_owned(),
                Event::TagMoved {
                    artifact: artifact(repo, &first),
                    tag: "1.0".to_owned(),
                    previous: None,
                    actor: "unrestricted".to_owned(),
                }
            ),
        ]
    );

    // The same manifest under the same tag again: pushed once more, the tag did not move.
    expect_status(
        app.put_manifest(repo, "1.0", OCI_MANIFEST, &first_manifest)
            .await,
        201,
        "re-push",
    )
    .await;
    assert_eq!(events(&app).await.len(), 3);
    assert_eq!(events(&app).await[2].1, pushed(&first));

    // Another manifest under the tag: the tag moves from the first.
    let (_, second) = app.push_image(repo, "1.0", &[b"layer two"]).await;
    let all = events(&app).await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[3].1, pushed(&second));
    assert_eq!(
        all[4].1,
        Event::TagMoved {
            artifact: artifact(repo, &second),
            tag: "1.0".to_owned(),
            previous: Some(first.to_string()),
            actor: "unrestricted".to_owned(),
        }
    );

    // A manifest whose layer was never pushed is refused inside its transaction.
    let config = config_blob("refused");
    let config = (app.push_blob(repo, &config).await, config.len());
    let refused = manifest_over(&config, &[(Digest::sha256_of(b"never pushed"), 12)]);
    assert_oci_error(
        app.put_manifest(repo, "2.0", OCI_MANIFEST, &refused).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        events(&app).await.len(),
        5,
        "a refused push leaves no event"
    );
}

#[tokio::test]
async fn registry_deletes_write_their_events() {
    let app = TestApp::spawn().await;
    let repo = "team/app";
    let (_, digest) = app.push_image(repo, "1.0", &[b"layer"]).await;
    let before = events(&app).await.len();

    assert_eq!(app.delete_manifest(repo, "1.0").await.status(), 202);
    assert_eq!(app.delete_manifest(repo, "1.0").await.status(), 404);
    assert_eq!(app.delete_manifest(repo, &digest).await.status(), 202);
    assert_eq!(app.delete_manifest(repo, &digest).await.status(), 404);

    let all = events(&app).await;
    assert_eq!(
        all[before..].to_vec(),
        vec![
            (
                "berth.events.tag.deleted.team.app".to_owned(),
                Event::TagDeleted {
                    artifact: artifact(repo, &digest),
                    tag: "1.0".to_owned(),
                    actor: "unrestricted".to_owned(),
                }
            ),
            (
                "berth.events.artifact.deleted.team.app".to_owned(),
                Event::ArtifactDeleted {
                    artifact: artifact(repo, &digest),
                    actor: "unrestricted".to_owned(),
                }
            ),
        ]
    );
}

#[tokio::test]
async fn management_api_tag_and_artifact_changes_write_their_events() {
    let app = TestApp::spawn_secure().await;
    app.insert_project("team", false).await;
    let registry = app.registry.with_basic("admin", ADMIN_PASSWORD);
    let repo = "team/app";
    let (_, digest) = registry.push_image(repo, "1.0", &[b"layer"]).await;
    let before = events(&app).await.len();
    let api = app.admin_api();
    let base = format!("/projects/team/repositories/app/artifacts/{digest}");

    expect_status(
        api.post(&format!("{base}/tags"), json!({"name": "stable"}))
            .await,
        201,
        "tag",
    )
    .await;
    // A refused change (the tag exists) writes nothing.
    expect_status(
        api.post(&format!("{base}/tags"), json!({"name": "stable"}))
            .await,
        409,
        "dup",
    )
    .await;
    expect_status(
        api.delete(&format!("{base}/tags/stable")).await,
        200,
        "untag",
    )
    .await;
    expect_status(api.delete(&base).await, 200, "delete").await;

    let actor = "admin".to_owned();
    let all = events(&app).await;
    assert_eq!(
        all[before..]
            .iter()
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>(),
        vec![
            Event::TagMoved {
                artifact: artifact(repo, &digest),
                tag: "stable".to_owned(),
                previous: None,
                actor: actor.clone(),
            },
            Event::TagDeleted {
                artifact: artifact(repo, &digest),
                tag: "stable".to_owned(),
                actor: actor.clone(),
            },
            Event::ArtifactDeleted {
                artifact: artifact(repo, &digest),
                actor,
            },
        ]
    );
}

#[tokio::test]
async fn deleting_a_repository_writes_one_event_per_artifact() {
    let app = TestApp::spawn_secure().await;
    app.insert_project("team", false).await;
    let registry = app.registry.with_basic("admin", ADMIN_PASSWORD);
    let repo = "team/app";
    let (_, one) = registry.push_image(repo, "1.0", &[b"layer one"]).await;
    let (_, two) = registry.push_image(repo, "2.0", &[b"layer two"]).await;
    let before = events(&app).await.len();
    expect_status(
        app.admin_api()
            .delete("/projects/team/repositories/app")
            .await,
        200,
        "delete repository",
    )
    .await;
    let deleted = |digest: &Digest| Event::ArtifactDeleted {
        artifact: artifact(repo, digest),
        actor: "admin".to_owned(),
    };
    let all = events(&app).await;
    assert_eq!(
        all[before..]
            .iter()
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>(),
        vec![deleted(&one), deleted(&two)]
    );
}
