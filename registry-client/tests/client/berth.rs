//! Against Berth's gateway with token auth: the Bearer challenge, tokens from
//! `/service/token` per scope, cached, and push/pull through them.

use std::time::Duration;

use berth_registry_client::{ClientError, Credential, MountOutcome};
use bytes::Bytes;

use crate::support::gateway::{Gateway, ADMIN, ADMIN_PASSWORD};
use crate::support::proxy::{Fault, FaultProxy, Rule};
use futures::StreamExt;

use crate::support::{
    basic, client, collect, eventually, random_blob, stream_of, TestImage, DEADLINE,
};

fn token_requests(proxy: &FaultProxy) -> usize {
    proxy
        .log()
        .iter()
        .filter(|s| s.path_and_query.starts_with("/service/token"))
        .count()
}

#[tokio::test]
async fn ping_and_token_flow() {
    let gateway = Gateway::start(&[]).await;
    // Through the proxy, which sees every request: the challenge's realm is built
    // from the Host header, so token requests come through it too.
    let proxy = FaultProxy::start(&gateway.url).await;

    let admin = client(&proxy.url, basic(ADMIN, ADMIN_PASSWORD));
    admin.ping().await.expect("ping as admin");
    let log = proxy.log();
    assert_eq!(log[0].status, 401, "anonymous first: {log:?}");
    assert!(
        log[1].path_and_query.starts_with("/service/token?service="),
        "{log:?}"
    );
    assert_eq!(log[2].status, 200, "{log:?}");

    let wrong = client(&proxy.url, basic(ADMIN, "wrong")).ping().await;
    match wrong {
        Err(ClientError::Unauthorized(message)) => {
            assert!(message.contains("token service refused"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let anonymous = client(&proxy.url, Credential::None).ping().await;
    assert!(
        matches!(anonymous, Err(ClientError::Unauthorized(_))),
        "{anonymous:?}"
    );

    // Push and pull a whole image: one token per scope, reused across requests.
    let before = token_requests(&proxy);
    let seen_before = proxy.log().len();
    let image = TestImage::random(&[10_000, 20_000, 30_000]);
    image.push(&admin, "library/app", "v1").await;
    let manifest = admin.get_manifest("library/app", "v1").await.unwrap();
    assert_eq!(manifest.bytes, image.manifest);
    let v2_requests = proxy
        .log()
        .iter()
        .filter(|s| s.path_and_query.starts_with("/v2/library/"))
        .count();
    let tokens = token_requests(&proxy) - before;
    assert!(v2_requests >= 10, "{v2_requests}");
    // pull,push for the pushes; pull for the HEAD and GET.
    assert!(
        tokens <= 2,
        "{tokens} token requests for {v2_requests} registry requests"
    );
    // The challenge is known by now: tokens are fetched and sent up front, no 401.
    let unauthorized = proxy
        .log()
        .iter()
        .skip(seen_before)
        .filter(|s| s.status == 401)
        .count();
    assert_eq!(unauthorized, 0, "{:?}", proxy.log());

    // Faults on the way: a rate-limited token service, a download cut mid-blob.
    let fresh = client(&proxy.url, basic(ADMIN, ADMIN_PASSWORD));
    proxy.add_rule(Rule {
        method: Some("GET".into()),
        path_contains: "/service/token".into(),
        times: 1,
        fault: Fault::TooManyRequests {
            retry_after: Some("2".into()),
        },
    });
    assert_eq!(
        fresh.ping().await,
        Err(ClientError::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        })
    );
    fresh.ping().await.expect("the next attempt gets its token");
    let layer = &image.layers[2];
    proxy.add_rule(Rule {
        method: Some("GET".into()),
        path_contains: format!("/blobs/{}", layer.1),
        times: 1,
        fault: Fault::ResetResponseAfter(8 * 1024),
    });
    let cut = collect(fresh.get_blob("library/app", &layer.1).await.unwrap()).await;
    assert!(matches!(cut, Err(ClientError::Connection(_))), "{cut:?}");
    let whole = collect(fresh.get_blob("library/app", &layer.1).await.unwrap())
        .await
        .unwrap();
    assert_eq!(Bytes::from(whole), layer.0);
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    // Six-second tokens: used for one second (the client keeps a 5 s margin).
    let gateway = Gateway::start(&[("BERTH_AUTH__TOKEN_TTL_SECS", "6")]).await;
    let proxy = FaultProxy::start(&gateway.url).await;
    let admin = client(&proxy.url, basic(ADMIN, ADMIN_PASSWORD));
    let image = TestImage::random(&[1000]);
    image.push(&admin, "library/ttl", "v1").await;
    let before = token_requests(&proxy);
    tokio::time::sleep(Duration::from_secs(2)).await;
    admin
        .head_manifest("library/ttl", "v1")
        .await
        .unwrap()
        .expect("there");
    assert_eq!(
        token_requests(&proxy),
        before + 1,
        "a new token, fetched up front"
    );
    assert!(proxy.log().iter().rev().take(2).all(|s| s.status != 401));

    // Concurrent requests of a new client share one token fetch.
    let fresh = client(&proxy.url, basic(ADMIN, ADMIN_PASSWORD));
    let before = token_requests(&proxy);
    let heads = (0..8).map(|_| fresh.head_manifest("library/ttl", "v1"));
    for head in futures::future::join_all(heads).await {
        assert!(head.unwrap().is_some());
    }
    assert_eq!(token_requests(&proxy), before + 1);
}

#[tokio::test]
async fn push_and_pull_blobs_manifests_tags() {
    let gateway = Gateway::start(&[]).await;
    let admin = client(&gateway.url, basic(ADMIN, ADMIN_PASSWORD));
    admin.ping().await.unwrap();

    // Chunked and monolithic blob uploads.
    let (large, large_digest) = random_blob(3 * 1024 * 1024 + 17);
    admin
        .push_blob(
            "proj/one",
            &large_digest,
            large.len() as u64,
            stream_of(large.clone(), 128 * 1024),
            Some(1024 * 1024),
        )
        .await
        .expect("chunked push into Berth");
    assert_eq!(
        admin.head_blob("proj/one", &large_digest).await.unwrap(),
        Some(large.len() as u64)
    );
    let back = collect(admin.get_blob("proj/one", &large_digest).await.unwrap())
        .await
        .unwrap();
    assert_eq!(Bytes::from(back), large);

    // An image and a mount into another repository of the same project.
    let image = TestImage::random(&[5000, 6000]);
    image.push(&admin, "proj/one", "v1").await;
    for (_, digest) in image.blobs() {
        let outcome = admin
            .mount_blob("proj/two", &digest, "proj/one")
            .await
            .unwrap();
        assert!(matches!(outcome, MountOutcome::Mounted), "{outcome:?}");
    }
    admin
        .put_manifest(
            "proj/two",
            "v1",
            crate::support::OCI_MANIFEST,
            image.manifest.clone(),
        )
        .await
        .unwrap();
    let info = admin
        .head_manifest("proj/two", "v1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.digest, image.digest);

    let mut tags = Vec::new();
    for tag in ["a", "b", "c"] {
        admin
            .put_manifest(
                "proj/one",
                tag,
                crate::support::OCI_MANIFEST,
                image.manifest.clone(),
            )
            .await
            .unwrap();
        tags.push(tag.to_string());
    }
    tags.push("v1".into());
    let mut listed = admin.tags_paged("proj/one", Some(2)).await.unwrap();
    listed.sort();
    assert_eq!(listed, tags);
    let catalog = admin.catalog(1).await.unwrap();
    assert_eq!(
        catalog,
        vec!["proj/one".to_string(), "proj/two".to_string()]
    );

    // Referrers through the API Berth has.
    let signature = TestImage::from_parts(
        random_blob(30),
        vec![random_blob(40)],
        Some((&image.digest, image.manifest.len() as u64)),
    );
    signature.push(&admin, "proj/one", "sig").await;
    let referrers = admin.referrers("proj/one", &image.digest).await.unwrap();
    assert_eq!(
        referrers
            .iter()
            .map(|d| d.digest.clone())
            .collect::<Vec<_>>(),
        vec![signature.digest.clone()]
    );

    // Delete.
    admin
        .delete_manifest("proj/two", &image.digest)
        .await
        .expect("delete as admin");
    assert_eq!(
        admin
            .head_manifest("proj/two", &image.digest)
            .await
            .unwrap(),
        None
    );

    // Anonymous callers of a private project: refused with the registry's reason.
    let anonymous = client(&gateway.url, Credential::None);
    let refused = anonymous.get_manifest("proj/one", "v1").await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Unauthorized(_) | ClientError::NotFound(_))
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_push_dropped_mid_body_leaves_no_upload_at_berth() {
    let gateway = Gateway::start(&[]).await;
    let proxy = FaultProxy::start(&gateway.url).await;
    let admin = client(&proxy.url, basic(ADMIN, ADMIN_PASSWORD));
    admin.ping().await.unwrap();
    let (_, digest) = random_blob(16);

    for (repo, chunk_size) in [("proj/mono", None), ("proj/chunked", Some(256 * 1024))] {
        let push = {
            let admin = admin.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                // 400 KiB, then the source stalls: mid-body (mid-chunk when chunked).
                let body = futures::stream::iter([Ok(Bytes::from(vec![9u8; 400 * 1024]))])
                    .chain(futures::stream::pending());
                admin
                    .push_blob(repo, &digest, 4 * 1024 * 1024, body, chunk_size)
                    .await
            })
        };
        eventually("bytes are staged at Berth", DEADLINE, || async {
            let staged: u64 = gateway
                .uploads()
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            if staged > 0 {
                Ok(())
            } else {
                Err(format!("{:?}", gateway.uploads()))
            }
        })
        .await;
        push.abort();
        assert!(push.await.unwrap_err().is_cancelled());
        eventually("the upload is gone at Berth", DEADLINE, || async {
            let uploads = gateway.uploads();
            if uploads.is_empty() {
                Ok(())
            } else {
                Err(format!("{uploads:?}"))
            }
        })
        .await;
        // The session can be gone (the gateway drops the file of a broken body) before
        // the client's clean-up DELETE has been answered and logged: wait for it too.
        let deleted_log = || {
            proxy.log().into_iter().find(|s| {
                s.method == "DELETE"
                    && s.path_and_query
                        .contains(&format!("/{repo}/blobs/uploads/"))
            })
        };
        eventually("the client deleted the session", DEADLINE, || async {
            deleted_log()
                .map(|_| ())
                .ok_or_else(|| format!("{:?}", proxy.log()))
        })
        .await;
        let deleted = deleted_log().expect("the client deleted the session");
        // 404 only if the gateway had already dropped the session of the broken body.
        assert!(matches!(deleted.status, 204 | 404), "{deleted:?}");
    }
}
