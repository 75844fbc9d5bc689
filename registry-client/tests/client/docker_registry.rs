//! Against Debian's docker-registry (distribution 2.8) with htpasswd (Basic) auth.

use std::time::Duration;

use berth_registry_client::{ClientError, Credential, MountOutcome};
use bytes::Bytes;
use futures::StreamExt;

use crate::support::registry::{DockerRegistry, PASSWORD, USERNAME};
use crate::support::{
    basic, client, collect, eventually, random_blob, stream_of, TestImage, DEADLINE, OCI_INDEX,
    OCI_MANIFEST,
};

#[tokio::test]
async fn ping_accepts_the_right_password_only() {
    let registry = DockerRegistry::start_with_auth().await;

    client(&registry.url, basic(USERNAME, PASSWORD))
        .ping()
        .await
        .expect("ping with the right password");

    let wrong = client(&registry.url, basic(USERNAME, "wrong")).ping().await;
    assert!(
        matches!(&wrong, Err(ClientError::Unauthorized(_))),
        "{wrong:?}"
    );
    assert!(!wrong.unwrap_err().is_transient());

    let anonymous = client(&registry.url, Credential::None).ping().await;
    assert!(
        matches!(&anonymous, Err(ClientError::Unauthorized(m)) if m.contains("no credentials")),
        "{anonymous:?}"
    );

    // Nothing listening: a connection error, which is transient.
    let closed = format!("http://127.0.0.1:{}", berth_events::testing::free_port());
    let refused = client(&closed, Credential::None).ping().await;
    assert!(
        matches!(&refused, Err(ClientError::Connection(_))),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().is_transient());
}

#[tokio::test]
async fn blobs_push_monolithic_and_chunked_then_head_and_stream_back() {
    let registry = DockerRegistry::start_with_auth().await;
    let client = client(&registry.url, basic(USERNAME, PASSWORD));
    let repo = "team/blobs";

    // Monolithic: one PUT with the streamed body, fed in odd-sized pieces.
    let (small, small_digest) = random_blob(300_001);
    assert_eq!(client.head_blob(repo, &small_digest).await.unwrap(), None);
    client
        .push_blob(
            repo,
            &small_digest,
            small.len() as u64,
            stream_of(small.clone(), 7_777),
            None,
        )
        .await
        .expect("monolithic push");
    assert_eq!(
        client.head_blob(repo, &small_digest).await.unwrap(),
        Some(small.len() as u64)
    );

    // Chunked: 2.5 MiB in 1 MiB PATCHes from 100 KB pieces (chunks end mid-piece).
    let (large, large_digest) = random_blob(2 * 1024 * 1024 + 512 * 1024);
    client
        .push_blob(
            repo,
            &large_digest,
            large.len() as u64,
            stream_of(large.clone(), 100_000),
            Some(1024 * 1024),
        )
        .await
        .expect("chunked push");
    assert_eq!(
        client.head_blob(repo, &large_digest).await.unwrap(),
        Some(large.len() as u64)
    );

    // Streamed back, verified, in several chunks (never one buffer).
    let mut stream = client
        .get_blob(repo, &large_digest)
        .await
        .expect("get blob");
    assert_eq!(stream.size(), Some(large.len() as u64));
    let mut received = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.expect("chunk"));
        chunks += 1;
    }
    assert!(chunks > 1, "the blob came in {chunks} chunk(s)");
    assert_eq!(Bytes::from(received), large);
    let small_back = collect(client.get_blob(repo, &small_digest).await.unwrap())
        .await
        .unwrap();
    assert_eq!(Bytes::from(small_back), small);

    // A blob the repository lacks.
    let (_, absent) = random_blob(10);
    assert!(matches!(
        client.get_blob(repo, &absent).await,
        Err(ClientError::NotFound(_))
    ));

    // No session is left behind by the successful pushes.
    assert!(registry.uploads(repo).is_empty());

    // A body whose content is not the declared digest is refused and blamed on the
    // source. (distribution 2.8 then fails to cancel the upload itself and refuses
    // our DELETE, so its session stays until the registry's upload purge: not checked.)
    let (other, _) = random_blob(1000);
    let (_, claimed) = random_blob(1000);
    for chunk_size in [None, Some(300)] {
        let refused = client
            .push_blob(
                repo,
                &claimed,
                other.len() as u64,
                stream_of(other.clone(), 100),
                chunk_size,
            )
            .await;
        assert!(
            matches!(&refused, Err(ClientError::Source(m)) if m.contains(&claimed)),
            "{refused:?}"
        );
    }
    assert_eq!(client.head_blob(repo, &claimed).await.unwrap(), None);
}

#[tokio::test]
async fn mounts_across_repositories() {
    let registry = DockerRegistry::start_with_auth().await;
    let client = client(&registry.url, basic(USERNAME, PASSWORD));
    let (data, digest) = random_blob(50_000);
    client
        .push_blob(
            "source/app",
            &digest,
            data.len() as u64,
            stream_of(data.clone(), 4096),
            None,
        )
        .await
        .unwrap();

    let outcome = client
        .mount_blob("dest/app", &digest, "source/app")
        .await
        .expect("mount");
    assert!(matches!(outcome, MountOutcome::Mounted), "{outcome:?}");
    assert_eq!(
        client.head_blob("dest/app", &digest).await.unwrap(),
        Some(data.len() as u64)
    );

    // A blob the source does not have: the registry opens an upload instead, which
    // can carry the blob...
    let (fresh, fresh_digest) = random_blob(20_000);
    let MountOutcome::Upload(session) = client
        .mount_blob("dest/app", &fresh_digest, "source/app")
        .await
        .unwrap()
    else {
        panic!("mounted a blob nobody has");
    };
    session
        .upload(
            &fresh_digest,
            fresh.len() as u64,
            stream_of(fresh.clone(), 3000),
            None,
        )
        .await
        .expect("upload through the mount's session");
    assert_eq!(
        client.head_blob("dest/app", &fresh_digest).await.unwrap(),
        Some(fresh.len() as u64)
    );

    // ...or, dropped unused, is deleted at the registry.
    let (_, unknown) = random_blob(10);
    let outcome = client
        .mount_blob("dest/app", &unknown, "source/app")
        .await
        .unwrap();
    assert!(matches!(outcome, MountOutcome::Upload(_)));
    assert_eq!(registry.uploads("dest/app").len(), 1, "the session is open");
    drop(outcome);
    eventually("the unused session is deleted", DEADLINE, || async {
        let uploads = registry.uploads("dest/app");
        if uploads.is_empty() {
            Ok(())
        } else {
            Err(format!("{uploads:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn manifests_put_get_head_delete() {
    let registry = DockerRegistry::start_with_auth().await;
    let client = client(&registry.url, basic(USERNAME, PASSWORD));
    let repo = "team/app";
    let image = TestImage::random(&[1000, 2000]);
    image.push(&client, repo, "v1").await;

    let info = client
        .head_manifest(repo, "v1")
        .await
        .unwrap()
        .expect("tag exists");
    assert_eq!(info.digest, image.digest);
    assert_eq!(info.media_type, OCI_MANIFEST);
    assert_eq!(info.size, image.manifest.len() as u64);

    for reference in ["v1", image.digest.as_str()] {
        let manifest = client.get_manifest(repo, reference).await.unwrap();
        assert_eq!(manifest.bytes, image.manifest, "bytes preserved");
        assert_eq!(manifest.digest, image.digest);
        assert_eq!(manifest.media_type, OCI_MANIFEST);
        let content = manifest.content().unwrap();
        assert_eq!(content.layers.len(), 2);
    }

    // An index over it, by digest then by tag.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        image.digest,
        image.manifest.len()
    );
    let index_digest = berth_registry_client::sha256_digest(index.as_bytes());
    let put = client
        .put_manifest(repo, &index_digest, OCI_INDEX, Bytes::from(index.clone()))
        .await
        .unwrap();
    assert_eq!(put, index_digest);
    client
        .put_manifest(repo, "multi", OCI_INDEX, Bytes::from(index.clone()))
        .await
        .unwrap();
    let fetched = client.get_manifest(repo, "multi").await.unwrap();
    assert_eq!(fetched.media_type, OCI_INDEX);
    assert_eq!(fetched.content().unwrap().manifests[0].digest, image.digest);

    assert_eq!(client.head_manifest(repo, "nope").await.unwrap(), None);
    assert!(matches!(
        client.get_manifest(repo, "nope").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.get_manifest("no/such", "v1").await,
        Err(ClientError::NotFound(_))
    ));
    // A digest reference whose content would not match is refused before sending.
    assert!(matches!(
        client
            .put_manifest(repo, &image.digest, OCI_INDEX, Bytes::from(index))
            .await,
        Err(ClientError::Invalid(_))
    ));

    client
        .delete_manifest(repo, &index_digest)
        .await
        .expect("delete");
    assert_eq!(
        client.head_manifest(repo, &index_digest).await.unwrap(),
        None
    );
    assert!(matches!(
        client.delete_manifest(repo, &index_digest).await,
        Err(ClientError::NotFound(_))
    ));
    // The image itself is still there.
    assert!(client.head_manifest(repo, "v1").await.unwrap().is_some());
}

#[tokio::test]
async fn tags_and_catalog_follow_pagination() {
    let registry = DockerRegistry::start_with_auth().await;
    let client = client(&registry.url, basic(USERNAME, PASSWORD));
    let image = TestImage::random(&[100]);
    let repos = ["a/one", "a/two", "b/three", "c/four", "c/five"];
    for repo in repos {
        image.push(&client, repo, "latest").await;
    }
    let tags = ["1.0", "1.1", "2.0", "latest", "x"];
    for tag in tags {
        image.push(&client, "a/one", tag).await;
    }

    let mut expected: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
    expected.sort();
    // Two per page: three requests, following Link each time.
    assert_eq!(client.catalog(2).await.unwrap(), expected);
    assert_eq!(client.catalog(100).await.unwrap(), expected);

    let mut all_tags = client.tags("a/one").await.unwrap();
    all_tags.sort();
    assert_eq!(all_tags, tags);
    let mut paged = client.tags_paged("a/one", Some(2)).await.unwrap();
    paged.sort();
    assert_eq!(paged, tags);

    assert!(matches!(
        client.tags("no/such").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.tags("Bad Name").await,
        Err(ClientError::Invalid(_))
    ));
}

#[tokio::test]
async fn referrers_fall_back_to_the_tag_schema() {
    let registry = DockerRegistry::start_with_auth().await;
    let client = client(&registry.url, basic(USERNAME, PASSWORD));
    let repo = "team/signed";
    let image = TestImage::random(&[500]);
    image.push(&client, repo, "v1").await;

    // distribution 2.8 has no referrers API: 404, and no fallback tag yet.
    assert_eq!(
        client.referrers(repo, &image.digest).await.unwrap(),
        Vec::new()
    );

    // A signature pointing at the image, listed in the `sha256-<hex>` index the way
    // clients maintain it on registries without the API.
    let signature = TestImage::from_parts(
        random_blob(30),
        vec![random_blob(40)],
        Some((&image.digest, image.manifest.len() as u64)),
    );
    signature.push(&client, repo, "sig").await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}}]}}"#,
        signature.digest,
        signature.manifest.len()
    );
    let tag = image.digest.replace(':', "-");
    client
        .put_manifest(repo, &tag, OCI_INDEX, Bytes::from(index))
        .await
        .unwrap();

    let referrers = client.referrers(repo, &image.digest).await.unwrap();
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0].digest, signature.digest);
    assert_eq!(
        referrers[0].artifact_type.as_deref(),
        Some("application/vnd.dev.cosign.artifact.sig.v1+json")
    );
}

/// A blob body that yields `first` (when not empty) and then never yields again, like
/// a source whose copy is about to be cancelled.
fn stalling_stream(
    first: Bytes,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let first = if first.is_empty() {
        Vec::new()
    } else {
        vec![Ok(first)]
    };
    futures::stream::iter(first).chain(futures::stream::pending())
}

#[tokio::test]
async fn a_dropped_or_failed_push_leaves_no_upload() {
    let registry = DockerRegistry::start_with_auth().await;
    let client = client(&registry.url, basic(USERNAME, PASSWORD));
    let (_, digest) = random_blob(16);

    // Cancelled the way the worker cancels a copy: the push future is dropped while
    // the source stalls, (monolithic) before the body's first byte, or (chunked) after
    // a whole chunk was PATCHed.
    let cases = [
        ("drop/monolithic", None, 0),
        ("drop/chunked", Some(256 * 1024), 256 * 1024),
    ];
    for (repo, chunk_size, sent) in cases {
        let push = {
            let client = client.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                let body = stalling_stream(Bytes::from(vec![7u8; sent]));
                client
                    .push_blob(repo, &digest, 4 * 1024 * 1024, body, chunk_size)
                    .await
            })
        };
        eventually("the upload is open at the registry", DEADLINE, || async {
            if registry.uploads(repo).is_empty() {
                Err("no upload yet".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        // Let the requests get going, then drop the push.
        tokio::time::sleep(Duration::from_millis(500)).await;
        push.abort();
        assert!(push.await.unwrap_err().is_cancelled());
        eventually("the abandoned upload is deleted", DEADLINE, || async {
            let uploads = registry.uploads(repo);
            if uploads.is_empty() {
                Ok(())
            } else {
                Err(format!("{uploads:?}"))
            }
        })
        .await;
    }

    // A source that fails mid-way: the error names the source, the session goes.
    let failing = futures::stream::iter([
        Ok(Bytes::from(vec![1u8; 100_000])),
        Err(std::io::Error::other("disk on fire")),
    ]);
    let result = client
        .push_blob("drop/failed", &digest, 1_000_000, failing, Some(60_000))
        .await;
    assert!(
        matches!(&result, Err(ClientError::Source(m)) if m.contains("disk on fire")),
        "{result:?}"
    );
    // A source shorter than the declared size.
    let short = stream_of(Bytes::from(vec![1u8; 1000]), 100);
    let result = client
        .push_blob("drop/failed", &digest, 2000, short, None)
        .await;
    assert!(
        matches!(&result, Err(ClientError::Source(m)) if m.contains("short")),
        "{result:?}"
    );
    eventually("the failed uploads are deleted", DEADLINE, || async {
        let uploads = registry.uploads("drop/failed");
        if uploads.is_empty() {
            Ok(())
        } else {
            Err(format!("{uploads:?}"))
        }
    })
    .await;
}
