//! A thin OCI Distribution client on hyper: pooled connections for the
//! upload scenarios, and single dedicated connections for the request-rate
//! scenarios. With credentials, every request carries what docker would send
//! (see [`crate::auth`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use url::Url;

use crate::auth::{Auth, Credentials, Scheme};

pub type ReqBody = BoxBody<Bytes, Infallible>;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().boxed()
}

pub fn full(b: Bytes) -> ReqBody {
    Full::new(b).boxed()
}

#[derive(Clone)]
pub struct Registry {
    client: Client<HttpConnector, ReqBody>,
    base: Url,
    timeout: Duration,
    /// Set by [`Registry::login`]; `None` sends no credentials.
    auth: Option<Arc<Auth>>,
}

impl Registry {
    pub fn new(target: &str, timeout: Duration) -> Result<Self> {
        let base = Url::parse(target).with_context(|| format!("bad --target URL {target:?}"))?;
        if base.scheme() != "http" {
            bail!("only http:// targets are supported, got {target}");
        }
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Ok(Registry {
            client,
            base,
            timeout,
            auth: None,
        })
    }

    /// Logs in as docker does: reads the registry's challenge on `/v2/`, then checks
    /// that `/v2/` answers 200 with the credentials (for the token flow, with a token
    /// of no scope, which is what `docker login` asks for).
    pub async fn login(&mut self, credentials: &Credentials) -> Result<()> {
        let v2 = self.url("/v2/")?;
        let resp = self.send_raw(Method::GET, &v2, &[], empty()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            let status = resp.status();
            bail!("GET {v2} without credentials: expected 401 and a challenge, got {status}; is authentication on?");
        }
        let challenge = resp
            .headers()
            .get(hyper::header::WWW_AUTHENTICATE)
            .ok_or_else(|| anyhow!("GET {v2}: 401 without WWW-Authenticate"))?
            .to_str()
            .context("WWW-Authenticate is not ASCII")?
            .to_owned();
        self.expect(resp, StatusCode::UNAUTHORIZED, "challenge")
            .await?;
        let scheme = Scheme::from_challenge(&challenge)?;
        self.auth = Some(Arc::new(Auth::new(scheme, credentials)));
        let resp = self.send(Method::GET, &v2, &[], empty()).await?;
        self.expect(resp, StatusCode::OK, &format!("GET {v2} with credentials"))
            .await?;
        Ok(())
    }

    /// `none`, `basic` or `token`.
    pub fn auth_name(&self) -> &'static str {
        self.auth.as_ref().map_or("none", |a| a.scheme.name())
    }

    /// Token requests made so far (0 without the token flow).
    pub fn token_requests(&self) -> u64 {
        self.auth.as_ref().map_or(0, |a| a.token_requests())
    }

    /// The `Authorization` value for `method` on `path`, fetching a token when the
    /// cache has none for its scope; `None` without credentials.
    pub async fn authorization(&self, method: &Method, path: &str) -> Result<Option<String>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let header = auth
            .header(method, path, |url, basic| async move {
                let resp = self
                    .send_raw(Method::GET, &url, &[("authorization", &basic)], empty())
                    .await?;
                let (parts, body) = resp.into_parts();
                let body = tokio::time::timeout(self.timeout, body.collect())
                    .await
                    .map_err(|_| anyhow!("GET {url}: timed out reading the token"))??
                    .to_bytes();
                Ok((parts.status, body))
            })
            .await?;
        Ok(Some(header))
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `path` is an absolute path such as `/v2/`.
    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("joining {path:?} to {}", self.base))
    }

    /// Sends a request with the credentials [`Registry::login`] set up.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        match self.authorization(&method, url.path()).await? {
            None => self.send_raw(method, url, headers, body).await,
            Some(authorization) => {
                let mut all = headers.to_vec();
                all.push(("authorization", &authorization));
                self.send_raw(method, url, &all, body).await
            }
        }
    }

    /// Sends a request with exactly `headers`.
    async fn send_raw(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        let mut b = Request::builder().method(method.clone()).uri(url.as_str());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body)?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(r) => r.with_context(|| format!("{method} {url}")),
            Err(_) => bail!("{method} {url}: timed out after {:?}", self.timeout),
        }
    }

    /// Checks the status, failing with the response body in the message;
    /// drains the body of accepted responses so the connection is reused.
    pub async fn expect(
        &self,
        resp: Response<Incoming>,
        ok: StatusCode,
        what: &str,
    ) -> Result<hyper::http::response::Parts> {
        let (parts, body) = resp.into_parts();
        let collected = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| anyhow!("{what}: timed out reading the response body"))?
            .with_context(|| format!("{what}: reading response body"))?
            .to_bytes();
        if parts.status != ok {
            bail!(
                "{what}: expected {ok}, got {}: {}",
                parts.status,
                truncate(&collected)
            );
        }
        Ok(parts)
    }

    fn location(&self, parts: &hyper::http::response::Parts, what: &str) -> Result<Url> {
        let loc = parts
            .headers
            .get(hyper::header::LOCATION)
            .ok_or_else(|| anyhow!("{what}: response has no Location header"))?
            .to_str()
            .with_context(|| format!("{what}: Location is not ASCII"))?;
        self.base
            .join(loc)
            .with_context(|| format!("{what}: bad Location {loc:?}"))
    }

    /// POST /v2/<repo>/blobs/uploads/ → 202 + Location.
    pub async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let resp = self
            .send(Method::POST, &url, &[("content-length", "0")], empty())
            .await?;
        let parts = self
            .expect(resp, StatusCode::ACCEPTED, &format!("POST {url}"))
            .await?;
        self.location(&parts, "start upload")
    }

    /// Monolithic push: POST, then PUT <location>&digest= with the body.
    pub async fn push_blob(&self, repo: &str, body: ReqBody, len: u64, digest: &str) -> Result<()> {
        let loc = self.start_upload(repo).await?;
        let put = with_digest(&loc, digest);
        let len_s = len.to_string();
        let resp = self
            .send(
                Method::PUT,
                &put,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-length", &len_s),
                ],
                body,
            )
            .await?;
        self.expect(resp, StatusCode::CREATED, &format!("PUT blob {digest}"))
            .await?;
        Ok(())
    }

    /// PATCH one chunk; returns the next Location.
    pub async fn patch_chunk(&self, loc: &Url, start: u64, data: Bytes) -> Result<Url> {
        let end = start + data.len() as u64 - 1;
        let range = format!("{start}-{end}");
        let len_s = data.len().to_string();
        let resp = self
            .send(
                Method::PATCH,
                loc,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                    ("content-length", &len_s),
                ],
                full(data),
            )
            .await?;
        let parts = self
            .expect(resp, StatusCode::ACCEPTED, &format!("PATCH {range}"))
            .await?;
        self.location(&parts, "PATCH chunk")
    }

    /// Completes a chunked upload with an empty PUT ?digest=.
    pub async fn finish_upload(&self, loc: &Url, digest: &str) -> Result<()> {
        let put = with_digest(loc, digest);
        let resp = self
            .send(Method::PUT, &put, &[("content-length", "0")], empty())
            .await?;
        self.expect(resp, StatusCode::CREATED, &format!("PUT (finish) {digest}"))
            .await?;
        Ok(())
    }

    /// PUT /v2/<repo>/manifests/<reference>; returns the request latency.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Duration> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let len_s = bytes.len().to_string();
        let t0 = Instant::now();
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[("content-type", media_type), ("content-length", &len_s)],
                full(bytes),
            )
            .await?;
        self.expect(
            resp,
            StatusCode::CREATED,
            &format!("PUT manifest {repo}:{reference}"),
        )
        .await?;
        Ok(t0.elapsed())
    }

    /// HEAD a blob and return its Content-Length.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Result<u64> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::HEAD, &url, &[], empty()).await?;
        let parts = self
            .expect(resp, StatusCode::OK, &format!("HEAD blob {digest}"))
            .await?;
        content_length(&parts.headers)
            .ok_or_else(|| anyhow!("HEAD blob {digest}: no Content-Length"))
    }

    /// GET a blob, following one redirect, returning the response.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Response<Incoming>> {
        let mut url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        for _ in 0..3 {
            let resp = self.send(Method::GET, &url, &[], empty()).await?;
            let st = resp.status();
            if st == StatusCode::OK {
                return Ok(resp);
            }
            if st.is_redirection() {
                let (parts, _) = resp.into_parts();
                url = self.location(&parts, "blob redirect")?;
                continue;
            }
            self.expect(resp, StatusCode::OK, &format!("GET blob {digest}"))
                .await?;
        }
        bail!("GET blob {digest}: too many redirects")
    }
}

pub fn content_length(h: &hyper::HeaderMap) -> Option<u64> {
    h.get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Appends `digest=<digest>` to the upload location, keeping its query.
pub fn with_digest(loc: &Url, digest: &str) -> Url {
    let mut u = loc.clone();
    let q = match loc.query() {
        Some(q) if !q.is_empty() => format!("{q}&digest={digest}"),
        _ => format!("digest={digest}"),
    };
    u.set_query(Some(&q));
    u
}

pub fn truncate(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned();
    if b.len() > 2048 {
        format!("{s}… ({} bytes)", b.len())
    } else if s.is_empty() {
        "(empty body)".into()
    } else {
        s
    }
}

/// One HTTP/1.1 connection of its own, for the request-rate scenarios: the
/// connection count is exact and no pool sits between requests.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(base: &Url) -> Result<Self> {
        let host = base
            .host_str()
            .ok_or_else(|| anyhow!("target has no host"))?;
        let port = base.port_or_known_default().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host_header = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Conn {
            sender,
            host: host_header,
        })
    }

    /// Sends one request and reads the whole response; returns status,
    /// headers and body length.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if let Some(a) = accept {
            b = b.header(hyper::header::ACCEPT, a);
        }
        if let Some(a) = authorization {
            b = b.header(hyper::header::AUTHORIZATION, a);
        }
        let resp = self.sender.send_request(b.body(Empty::new())?).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_query() {
        let u = Url::parse("http://h/v2/r/blobs/uploads/abc?_state=x%3D").unwrap();
        assert_eq!(
            with_digest(&u, "sha256:00").as_str(),
            "http://h/v2/r/blobs/uploads/abc?_state=x%3D&digest=sha256:00"
        );
        let u = Url::parse("http://h/v2/r/blobs/uploads/abc").unwrap();
        assert_eq!(
            with_digest(&u, "sha256:00").as_str(),
            "http://h/v2/r/blobs/uploads/abc?digest=sha256:00"
        );
    }

    #[test]
    fn relative_location() {
        let base = Url::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            base.join("/v2/a/b/blobs/uploads/u1").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1"
        );
        assert_eq!(
            base.join("http://127.0.0.1:5000/v2/x").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/x"
        );
    }
}
