//! The benchmark scenarios. Each returns one `Outcome`: a human line and a
//! JSON object.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::data::{sha256_digest, stream_digest, Prng, PrngBody, MIB};
use crate::http::{content_length, truncate, Conn, Registry, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::stats::{mean_ms, percentile_ms};

pub const ALL: &[&str] = &[
    "push-blob",
    "pull-blob",
    "chunked-upload",
    "push-images",
    "get-manifest",
    "head-blob",
    "concurrent-push",
];

#[derive(Clone, Debug)]
pub struct Opts {
    pub repo: String,
    pub size_mib: Option<u64>,
    pub chunk_mib: u64,
    pub concurrency: Option<usize>,
    pub count: Option<usize>,
    pub duration: Duration,
    pub max_requests: u64,
    pub repeat: usize,
    pub seed: u64,
    pub verify: bool,
}

/// What one scenario leaves for the next (pull-blob pulls push-blob's blob).
#[derive(Default)]
pub struct State {
    pub last_blob: Option<(String, u64)>,
}

pub struct Outcome {
    pub human: String,
    pub json: Map<String, Value>,
}

fn mibs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn r1(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        Value::Null
    }
}

fn r3(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

pub async fn run(name: &str, reg: &Registry, o: &Opts, st: &mut State) -> Result<Outcome> {
    match name {
        "push-blob" => push_blob(reg, o, st).await,
        "pull-blob" => pull_blob(reg, o, st).await,
        "chunked-upload" => chunked_upload(reg, o, st).await,
        "push-images" => push_images(reg, o).await,
        "get-manifest" => rate(reg, o, RateKind::Manifest).await,
        "head-blob" => rate(reg, o, RateKind::Head).await,
        "concurrent-push" => concurrent_push(reg, o).await,
        other => bail!("unknown scenario {other:?}; known: {}, all", ALL.join(", ")),
    }
}

async fn digest_of(seed: u64, len: u64) -> Result<String> {
    Ok(tokio::task::spawn_blocking(move || stream_digest(seed, len)).await?)
}

async fn check_size(reg: &Registry, repo: &str, digest: &str, len: u64) -> Result<()> {
    let got = reg.head_blob(repo, digest).await?;
    ensure!(
        got == len,
        "HEAD {digest}: Content-Length {got}, pushed {len}"
    );
    Ok(())
}

// ---------------------------------------------------------------- push-blob

async fn push_blob(reg: &Registry, o: &Opts, st: &mut State) -> Result<Outcome> {
    let size = o.size_mib.unwrap_or(1024) * MIB;
    let mut runs = Vec::new();
    for r in 0..o.repeat.max(1) {
        let seed = o.seed.wrapping_add(0x1000 + r as u64);
        let digest = digest_of(seed, size).await?;
        let t0 = Instant::now();
        reg.push_blob(&o.repo, PrngBody::new(seed, size).boxed(), size, &digest)
            .await?;
        let el = t0.elapsed();
        check_size(reg, &o.repo, &digest, size).await?;
        runs.push(mibs(size, el));
        st.last_blob = Some((digest, size));
    }
    let best = runs.iter().cloned().fold(f64::MIN, f64::max);
    Ok(Outcome {
        human: format!(
            "push {} MiB monolithic: {:.1} MiB/s (best of {}: {})",
            size / MIB,
            best,
            runs.len(),
            fmt_runs(&runs)
        ),
        json: obj(json!({
            "mib_per_s": r1(best),
            "size_mib": size / MIB,
            "runs_mib_per_s": runs.iter().map(|x| r1(*x)).collect::<Vec<_>>(),
        })),
    })
}

fn fmt_runs(runs: &[f64]) -> String {
    runs.iter()
        .map(|x| format!("{x:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------- pull-blob

async fn pull_blob(reg: &Registry, o: &Opts, st: &mut State) -> Result<Outcome> {
    let (digest, size) = match &st.last_blob {
        Some(b) => b.clone(),
        None => {
            let size = o.size_mib.unwrap_or(1024) * MIB;
            let seed = o.seed.wrapping_add(0x2000);
            let digest = digest_of(seed, size).await?;
            reg.push_blob(&o.repo, PrngBody::new(seed, size).boxed(), size, &digest)
                .await?;
            st.last_blob = Some((digest.clone(), size));
            (digest, size)
        }
    };
    let mut runs = Vec::new();
    for _ in 0..o.repeat.max(1) {
        let t0 = Instant::now();
        let n = fetch(reg, &o.repo, &digest, size, None).await?;
        let el = t0.elapsed();
        ensure!(n == size, "GET {digest}: got {n} bytes, expected {size}");
        runs.push(mibs(size, el));
    }
    // Verify in a separate, untimed pass so client-side hashing does not cap
    // the measured transfer rate.
    if o.verify {
        let mut h = Sha256::new();
        fetch(reg, &o.repo, &digest, size, Some(&mut h)).await?;
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        ensure!(got == digest, "GET {digest}: content hashes to {got}");
    }
    let best = runs.iter().cloned().fold(f64::MIN, f64::max);
    Ok(Outcome {
        human: format!(
            "pull {} MiB: {:.1} MiB/s (best of {}: {}){}",
            size / MIB,
            best,
            runs.len(),
            fmt_runs(&runs),
            if o.verify { ", digest verified" } else { "" }
        ),
        json: obj(json!({
            "mib_per_s": r1(best),
            "size_mib": size / MIB,
            "runs_mib_per_s": runs.iter().map(|x| r1(*x)).collect::<Vec<_>>(),
            "verified": o.verify,
        })),
    })
}

async fn fetch(
    reg: &Registry,
    repo: &str,
    digest: &str,
    size: u64,
    mut hasher: Option<&mut Sha256>,
) -> Result<u64> {
    let resp = reg.get_blob(repo, digest).await?;
    if let Some(cl) = content_length(resp.headers()) {
        ensure!(
            cl == size,
            "GET {digest}: Content-Length {cl}, expected {size}"
        );
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(3600);
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("GET {digest}: reading body"))?;
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&data);
            }
        }
        ensure!(n <= size, "GET {digest}: body longer than {size}");
        ensure!(Instant::now() < deadline, "GET {digest}: took over an hour");
    }
    Ok(n)
}

// ---------------------------------------------------------------- chunked

async fn chunked_upload(reg: &Registry, o: &Opts, st: &mut State) -> Result<Outcome> {
    let size = o.size_mib.unwrap_or(256) * MIB;
    let chunk = o.chunk_mib * MIB;
    ensure!(chunk > 0, "--chunk-mib must be > 0");
    let seed = o.seed.wrapping_add(0x3000);
    let digest = digest_of(seed, size).await?;
    let mut rng = Prng::new(seed);
    let t0 = Instant::now();
    let mut loc = reg.start_upload(&o.repo).await?;
    let mut off = 0u64;
    let mut chunks = 0;
    while off < size {
        let n = chunk.min(size - off);
        let data = rng.bytes(n as usize);
        loc = reg.patch_chunk(&loc, off, data).await?;
        off += n;
        chunks += 1;
    }
    reg.finish_upload(&loc, &digest).await?;
    let el = t0.elapsed();
    check_size(reg, &o.repo, &digest, size).await?;
    let _ = st;
    let rate = mibs(size, el);
    Ok(Outcome {
        human: format!(
            "chunked upload {} MiB in {} × {} MiB PATCH: {:.1} MiB/s ({:.2} s)",
            size / MIB,
            chunks,
            o.chunk_mib,
            rate,
            el.as_secs_f64()
        ),
        json: obj(json!({
            "mib_per_s": r1(rate),
            "size_mib": size / MIB,
            "chunk_mib": o.chunk_mib,
            "chunks": chunks,
            "seconds": r3(el.as_secs_f64()),
        })),
    })
}

// ---------------------------------------------------------------- images

pub struct Image {
    pub tag: String,
    pub config: (Bytes, String),
    pub layers: Vec<(Bytes, String)>,
    pub manifest: Bytes,
}

pub fn make_image(seed: u64, i: u64, layers: usize, layer_size: usize, tag: String) -> Image {
    let mut rng = Prng::new(seed ^ (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let layers: Vec<(Bytes, String)> = (0..layers)
        .map(|_| {
            let b = rng.bytes(layer_size);
            let d = sha256_digest(&b);
            (b, d)
        })
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "berth.loadtest": format!("{seed:x}-{i}") } },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        },
    }))
    .expect("json");
    let config = Bytes::from(config);
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": layers.iter().map(|(b, d)| json!({
            "mediaType": OCI_LAYER, "digest": d, "size": b.len(),
        })).collect::<Vec<_>>(),
    }))
    .expect("json");
    Image {
        tag,
        config: (config, config_digest),
        layers,
        manifest: Bytes::from(manifest),
    }
}

/// Pushes config and layers, then the manifest by tag; returns the manifest
/// PUT latency.
pub async fn push_image(reg: &Registry, repo: &str, img: &Image) -> Result<Duration> {
    let (c, cd) = &img.config;
    reg.push_blob(repo, crate::http::full(c.clone()), c.len() as u64, cd)
        .await?;
    for (b, d) in &img.layers {
        reg.push_blob(repo, crate::http::full(b.clone()), b.len() as u64, d)
            .await?;
    }
    reg.put_manifest(repo, &img.tag, OCI_MANIFEST, img.manifest.clone())
        .await
}

async fn push_images(reg: &Registry, o: &Opts) -> Result<Outcome> {
    let count = o.count.unwrap_or(500);
    let conc = o.concurrency.unwrap_or(32).max(1);
    let layer_size = 256 * 1024;
    let seed = o.seed.wrapping_add(0x4000);
    // Generated before the clock starts (count × 768 KiB in memory).
    let images: Arc<Vec<Image>> = Arc::new(
        tokio::task::spawn_blocking(move || {
            (0..count as u64)
                .map(|i| {
                    make_image(
                        seed,
                        i,
                        3,
                        layer_size,
                        format!("lt-{:x}-{i}", seed & 0xffff_ffff),
                    )
                })
                .collect()
        })
        .await?,
    );
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc.min(count.max(1)) {
        let (reg, images, next, repo) = (reg.clone(), images.clone(), next.clone(), o.repo.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= images.len() {
                    break;
                }
                let d = push_image(&reg, &repo, &images[i]).await?;
                lat.push(d.as_micros() as u64);
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Vec::with_capacity(count);
    while let Some(r) = set.join_next().await {
        lat.extend(r??);
    }
    let el = t0.elapsed();
    ensure!(lat.len() == count, "pushed {} of {count} images", lat.len());
    lat.sort_unstable();
    let ips = count as f64 / el.as_secs_f64();
    let bytes: u64 = images
        .iter()
        .map(|im| (im.config.0.len() + im.layers.iter().map(|l| l.0.len()).sum::<usize>()) as u64)
        .sum();
    let (p50, p99) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));
    Ok(Outcome {
        human: format!(
            "push {count} images (config + 3 × 256 KiB) at concurrency {conc}: {ips:.1} images/s \
             ({:.1} MiB/s of blobs, {:.2} s); manifest PUT p50 {p50:.2} ms, p99 {p99:.2} ms",
            mibs(bytes, el),
            el.as_secs_f64()
        ),
        json: obj(json!({
            "images_per_s": r1(ips),
            "count": count,
            "concurrency": conc,
            "seconds": r3(el.as_secs_f64()),
            "mib_per_s": r1(mibs(bytes, el)),
            "p50_ms": r3(p50),
            "p99_ms": r3(p99),
            "mean_ms": r3(mean_ms(&lat)),
        })),
    })
}

// ---------------------------------------------------------------- rates

#[derive(Clone, Copy, PartialEq)]
enum RateKind {
    Manifest,
    Head,
}

async fn rate(reg: &Registry, o: &Opts, kind: RateKind) -> Result<Outcome> {
    let conc = o.concurrency.unwrap_or(64).max(1);
    let seed = o.seed.wrapping_add(if kind == RateKind::Manifest {
        0x5000
    } else {
        0x6000
    });
    let tag = format!("lt-rate-{:x}", seed & 0xffff_ffff);
    let img = make_image(seed, 0, 1, 256 * 1024, tag.clone());
    push_image(reg, &o.repo, &img)
        .await
        .context("setting up the image")?;
    let (method, path, accept, want_len, name) = match kind {
        RateKind::Manifest => (
            Method::GET,
            format!("/v2/{}/manifests/{tag}", o.repo),
            Some(OCI_MANIFEST),
            img.manifest.len() as u64,
            "GET manifest",
        ),
        RateKind::Head => (
            Method::HEAD,
            format!("/v2/{}/blobs/{}", o.repo, img.layers[0].1),
            None,
            img.layers[0].0.len() as u64,
            "HEAD blob",
        ),
    };
    // Resolve the path against the target (it may carry a path prefix).
    let path = {
        let u = reg.url(&path)?;
        u.path().to_string()
    };
    let mut conns = Vec::with_capacity(conc);
    for _ in 0..conc {
        conns.push(Conn::open(reg.base()).await?);
    }
    // One Authorization for the timed loop, as a client pulling repeatedly reuses its
    // cached token; fetched before the clock starts, like docker's first pull.
    let authorization: Option<Arc<str>> = reg.authorization(&method, &path).await?.map(Arc::from);
    let issued = Arc::new(AtomicU64::new(0));
    let max = o.max_requests;
    let t0 = Instant::now();
    let deadline = t0 + o.duration;
    // A hung request must not outlive the scenario by much.
    let req_timeout = reg.timeout().min(o.duration + Duration::from_secs(30));
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (method, path, issued) = (method.clone(), path.clone(), issued.clone());
        let authorization = authorization.clone();
        set.spawn(async move {
            let mut lat: Vec<u64> = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                let (status, headers, body) = tokio::time::timeout(
                    req_timeout,
                    conn.request(method.clone(), &path, accept, authorization.as_deref()),
                )
                .await
                .map_err(|_| anyhow!("{name} {path}: no answer within {req_timeout:?}"))??;
                let d = t.elapsed();
                if status != StatusCode::OK {
                    bail!(
                        "{name} {path}: expected 200 OK, got {status}: {}",
                        truncate(&body)
                    );
                }
                let len = match kind {
                    RateKind::Head => content_length(&headers).unwrap_or(u64::MAX),
                    RateKind::Manifest => body.len() as u64,
                };
                ensure!(
                    len == want_len,
                    "{name} {path}: length {len}, expected {want_len}"
                );
                lat.push(d.as_micros() as u64);
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r??);
    }
    let el = t0.elapsed();
    lat.sort_unstable();
    let rps = lat.len() as f64 / el.as_secs_f64();
    let (p50, p99) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));
    Ok(Outcome {
        human: format!(
            "{name} with {conc} connections for {:.1} s: {} requests, {rps:.0} req/s; \
             p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms",
            el.as_secs_f64(),
            lat.len(),
            percentile_ms(&lat, 100.0)
        ),
        json: obj(json!({
            "req_per_s": r1(rps),
            "requests": lat.len(),
            "concurrency": conc,
            "seconds": r3(el.as_secs_f64()),
            "p50_ms": r3(p50),
            "p99_ms": r3(p99),
            "max_ms": r3(percentile_ms(&lat, 100.0)),
            "mean_ms": r3(mean_ms(&lat)),
        })),
    })
}

// ---------------------------------------------------------------- concurrent

async fn concurrent_push(reg: &Registry, o: &Opts) -> Result<Outcome> {
    let conc = o.concurrency.unwrap_or(32).max(1);
    let size = o.size_mib.unwrap_or(1024) * MIB;
    let base = o.seed.wrapping_add(0x7000);
    // Digests first, on all cores, before the clock starts.
    let digests: Vec<String> = tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = AtomicUsize::new(0);
        let out = std::sync::Mutex::new(vec![String::new(); conc]);
        std::thread::scope(|s| {
            for _ in 0..threads.min(conc) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= conc {
                        break;
                    }
                    let d = stream_digest(base + i as u64, size);
                    out.lock().unwrap()[i] = d;
                });
            }
        });
        out.into_inner().unwrap()
    })
    .await?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, digest) in digests.iter().enumerate() {
        let (reg, repo, digest) = (reg.clone(), o.repo.clone(), digest.clone());
        set.spawn(async move {
            let t = Instant::now();
            reg.push_blob(
                &repo,
                PrngBody::new(base + i as u64, size).boxed(),
                size,
                &digest,
            )
            .await?;
            anyhow::Ok(t.elapsed().as_micros() as u64)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.push(r??);
    }
    let el = t0.elapsed();
    for d in &digests {
        check_size(reg, &o.repo, d, size).await?;
    }
    lat.sort_unstable();
    let total = size * conc as u64;
    let rate = mibs(total, el);
    Ok(Outcome {
        human: format!(
            "{conc} concurrent {} MiB uploads: {:.1} MiB/s aggregate in {:.1} s; per upload p50 {:.1} s, max {:.1} s",
            size / MIB,
            rate,
            el.as_secs_f64(),
            percentile_ms(&lat, 50.0) / 1000.0,
            percentile_ms(&lat, 100.0) / 1000.0
        ),
        json: obj(json!({
            "mib_per_s": r1(rate),
            "size_mib": size / MIB,
            "concurrency": conc,
            "seconds": r3(el.as_secs_f64()),
            "p50_ms": r3(percentile_ms(&lat, 50.0)),
            "p99_ms": r3(percentile_ms(&lat, 99.0)),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_manifest_is_consistent() {
        let img = make_image(1, 2, 3, 1024, "t".into());
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], img.config.1.as_str());
        assert_eq!(m["layers"].as_array().unwrap().len(), 3);
        for (l, (b, d)) in m["layers"].as_array().unwrap().iter().zip(&img.layers) {
            assert_eq!(l["digest"], d.as_str());
            assert_eq!(l["size"], b.len());
            assert_eq!(sha256_digest(b), *d);
        }
        let other = make_image(1, 3, 3, 1024, "u".into());
        assert_ne!(other.layers[0].1, img.layers[0].1);
    }
}
