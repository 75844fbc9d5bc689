//! A fault-injecting HTTP/1.1 proxy in front of a registry: forwards every request to
//! the upstream unchanged (the `Host` header too, so the registry's `Location`s and
//! token realms point back at the proxy), except those matching a [`Rule`], which get
//! a [`Fault`] instead. It logs what it saw and the most requests it had in flight at
//! once, so tests can check what a client sent, when, and how many at a time.
//!
//! Self-contained (hyper, hyper-util, http-body-util, tokio, libc) so other crates'
//! tests can include it with `#[path]`.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer `429 Too Many Requests` with this `Retry-After` value (none when `None`),
    /// without forwarding.
    TooManyRequests { retry_after: Option<String> },
    /// Forward, then reset the connection (TCP RST) after this many bytes of the
    /// response body.
    ResetResponseAfter(usize),
    /// Read this many bytes of the request body, then reset the connection.
    ResetRequestAfter(usize),
    /// Answer this, without forwarding.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// Requests with `method` (any when `None`) whose path and query contain
/// `path_contains` get `fault`, `times` times.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: String,
    pub times: usize,
    pub fault: Fault,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    /// The status answered (0 when the upstream could not be reached).
    pub status: u16,
    /// Whether a rule answered instead of the upstream.
    pub faulted: bool,
    pub at: Instant,
}

struct State {
    upstream: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy on a free port forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .trim_end_matches('/')
            .strip_prefix("http://")
            .expect("an http:// upstream")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let fd = stream.as_raw_fd();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), fd, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            url: format!("http://{addr}"),
            addr,
            state,
            task,
        }
    }

    /// Adds a rule; rules are tried in the order added.
    pub fn add_rule(&self, rule: Rule) {
        self.state.rules.lock().expect("rules").push(rule);
    }

    /// Everything seen so far.
    pub fn log(&self) -> Vec<Seen> {
        self.state.log.lock().expect("log").clone()
    }

    /// The most requests that were in flight at once (from arrival until the
    /// response body was sent).
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request in flight until dropped (with the response body).
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn full(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .expect("a valid response")
}

/// Makes closing `fd` send a TCP RST instead of a FIN.
fn arm_reset(fd: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket the proxy's connection task still owns (the body
    // being sent belongs to that connection); the struct outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

async fn handle(
    state: Arc<State>,
    fd: i32,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let in_flight = InFlight::new(state.clone());
    let method = req.method().as_str().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let fault = {
        let mut rules = state.rules.lock().expect("rules");
        let found = rules.iter_mut().find(|r| {
            r.times > 0
                && r.method.as_deref().is_none_or(|m| m == method)
                && path_and_query.contains(&r.path_contains)
        });
        found.map(|rule| {
            rule.times -= 1;
            rule.fault.clone()
        })
    };
    let record = |status: u16, faulted: bool| {
        state.log.lock().expect("log").push(Seen {
            method: method.clone(),
            path_and_query: path_and_query.clone(),
            status,
            faulted,
            at: Instant::now(),
        });
    };
    match &fault {
        Some(Fault::TooManyRequests { retry_after }) => {
            record(429, true);
            let headers: Vec<(String, String)> = retry_after
                .iter()
                .map(|v| ("retry-after".to_owned(), v.clone()))
                .chain([("content-type".to_owned(), "application/json".to_owned())])
                .collect();
            let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_vec();
            return Ok(full(429, &headers, body));
        }
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            record(*status, true);
            return Ok(full(*status, headers, body.clone()));
        }
        Some(Fault::ResetRequestAfter(limit)) => {
            record(0, true);
            let mut body = req.into_body();
            let mut read = 0usize;
            while read < *limit {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            arm_reset(fd);
            // An error from the service makes hyper drop the connection.
            return Err("proxy: request reset by fault rule".into());
        }
        _ => {}
    }
    let (mut parts, body) = req.into_parts();
    let uri = format!("http://{}{}", state.upstream, path_and_query);
    parts.uri = uri.parse().expect("an upstream URI");
    let response = match state.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => {
            record(0, false);
            return Ok(full(
                502,
                &[],
                format!("proxy: upstream failed: {e}").into_bytes(),
            ));
        }
    };
    record(response.status().as_u16(), fault.is_some());
    let reset_after = match fault {
        Some(Fault::ResetResponseAfter(n)) => Some(n),
        _ => None,
    };
    let (parts, body) = response.into_parts();
    let mut sent = 0usize;
    let frames = body.into_data_stream().map(move |item| {
        // Keeps the request counted until the body is done.
        let _ = &in_flight;
        let data = item.map_err(|e| Box::new(e) as BoxError)?;
        if let Some(limit) = reset_after {
            if sent + data.len() > limit {
                arm_reset(fd);
                return Err(Box::<dyn std::error::Error + Send + Sync>::from(
                    "proxy: connection reset by fault rule",
                ));
            }
        }
        sent += data.len();
        Ok(Frame::data(data))
    });
    Ok(Response::from_parts(
        parts,
        BodyExt::boxed(StreamBody::new(frames)),
    ))
}
