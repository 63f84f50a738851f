//! The accept loop and one task per connection.
//!
//! The loop takes a permit per connection from a semaphore of `max_connections`. Without a free
//! permit it asks the connection idle the longest to close (evicting the oldest idle first keeps
//! a client that has just connected) and waits for the permit; when every connection is busy it
//! waits without accepting, so newcomers queue in the kernel backlog. Each connection task runs
//! hyper's HTTP/1 connection next to a watchdog that closes it at its [`Activity`] deadline.
//! An accept error (out of file descriptors below `max_connections`) evicts the same way.
//! Shutdown stops accepting, closes idle connections and waits for requests in progress (each
//! bounded by the body timeout and its handler).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::auth::Auth;
use crate::config::{HttpOptions, Limits};
use crate::conn::{Activity, DeadlineBody, Expiry, Tracked};
use crate::metrics::HttpMetrics;
use crate::tls::CertReloader;

/// Serve `router` on `listener` with `options` until `shutdown` resolves, then close idle
/// connections and wait for requests in progress.
pub fn serve(
    listener: TcpListener,
    router: Router,
    options: &HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let options = options.clone();
    async move {
        let tls = match &options.tls {
            Some(reloader) => Some(reloader.acceptor().map_err(io::Error::other)?),
            None => None,
        };
        let server = Arc::new(Server {
            router,
            limits: options.limits,
            auth: options.auth,
            tls,
            metrics: options.metrics,
            base: Instant::now(),
            conns: Mutex::default(),
        });
        server.run(listener, options.tls, shutdown).await
    }
}

struct Server {
    router: Router,
    limits: Limits,
    auth: Auth,
    tls: Option<TlsAcceptor>,
    metrics: Option<HttpMetrics>,
    base: Instant,
    conns: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// What the accept loop knows of a connection.
struct Slot {
    activity: Arc<Activity>,
    evict: Notify,
    evicted: AtomicBool,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Done,
    Idle,
    Header,
    Evicted,
    TlsError,
    Shutdown,
}

impl Closed {
    const ALL: [Closed; 6] =
        [Closed::Done, Closed::Idle, Closed::Header, Closed::Evicted, Closed::TlsError, Closed::Shutdown];

    fn reason(self) -> &'static str {
        match self {
            Closed::Done => "done",
            Closed::Idle => "idle_timeout",
            Closed::Header => "header_timeout",
            Closed::Evicted => "evicted",
            Closed::TlsError => "tls_error",
            Closed::Shutdown => "shutdown",
        }
    }
}

impl From<Expiry> for Closed {
    fn from(e: Expiry) -> Self {
        match e {
            Expiry::Idle => Closed::Idle,
            Expiry::Header => Closed::Header,
        }
    }
}

/// Wait between accept errors (out of file descriptors, mostly), and between warnings about them.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

impl Server {
    async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        reloader: Option<Arc<CertReloader>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let local = listener.local_addr()?;
        if self.auth.is_open() && !local.ip().is_loopback() {
            tracing::warn!(
                %local,
                "listening beyond loopback without bearer tokens: anyone who reaches it may use it; set [[http.tokens]]"
            );
        }
        let (stop, stopped) = watch::channel(false);
        if let Some(reloader) = reloader {
            reload_on_sighup(reloader, stopped.clone())?;
        }
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut tasks = JoinSet::new();
        let mut next_id = 0u64;
        let mut last_warning: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors below max_connections: make room the same way.
                        self.evict_idlest();
                        if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY) {
                            tracing::warn!(%error, %local, "accept failed (logged at most every 10 s)");
                            last_warning = Some(Instant::now());
                        }
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = self.permit(&permits) => permit,
            };
            next_id += 1;
            let slot = self.register(next_id);
            tasks.spawn(self.clone().connection(next_id, slot, stream, permit, stopped.clone()));
        }
        drop(listener);
        stop.send_replace(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// A free permit; at the limit, evict the connection idle the longest and wait for its permit.
    async fn permit(&self, permits: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = permits.clone().try_acquire_owned() {
                return permit;
            }
            self.evict_idlest();
            let wait = tokio::time::timeout(Duration::from_millis(100), permits.clone().acquire_owned());
            if let Ok(permit) = wait.await {
                return permit.expect("the semaphore is never closed");
            }
        }
    }

    fn evict_idlest(&self) {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let victim = conns
            .values()
            .filter(|s| s.activity.is_idle() && !s.evicted.load(Ordering::Relaxed))
            .min_by_key(|s| s.activity.last_ms());
        if let Some(slot) = victim {
            slot.evicted.store(true, Ordering::Relaxed);
            slot.evict.notify_one();
        }
    }

    fn register(&self, id: u64) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            activity: Arc::new(Activity::new(self.base)),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).insert(id, slot.clone());
        if let Some(m) = &self.metrics {
            m.open.inc();
        }
        slot
    }

    async fn connection(
        self: Arc<Self>,
        id: u64,
        slot: Arc<Slot>,
        stream: TcpStream,
        _permit: OwnedSemaphorePermit,
        mut stopped: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let io = Tracked::new(stream, slot.activity.clone());
        let closed = match self.tls.clone() {
            None => self.http(io, &slot, &mut stopped).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(io));
                let done = tokio::select! {
                    done = handshake => done,
                    () = slot.evict.notified() => return self.closed(id, Closed::Evicted),
                    _ = stopped.wait_for(|s| *s) => return self.closed(id, Closed::Shutdown),
                };
                match done {
                    Ok(Ok(tls)) => self.http(tls, &slot, &mut stopped).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        Closed::TlsError
                    }
                    Err(_) => Closed::Header,
                }
            }
        };
        self.closed(id, closed);
    }

    fn closed(&self, id: u64, why: Closed) {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        if let Some(m) = &self.metrics {
            m.open.dec();
            m.closed.with_label_values(&[why.reason()]).inc();
        }
    }

    /// Serve HTTP/1.1 on `io` until the client is done, a deadline passes or the server stops.
    async fn http<I>(self: &Arc<Self>, io: I, slot: &Slot, stopped: &mut watch::Receiver<bool>) -> Closed
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.clone();
        let activity = slot.activity.clone();
        let service = service_fn(move |request| {
            let server = server.clone();
            let activity = activity.clone();
            async move { Ok::<_, Infallible>(server.handle(request, &activity).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            let wake = match slot.activity.deadline(&self.limits) {
                Some((at, _)) => at,
                None => Instant::now() + self.limits.idle_timeout,
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "http connection ended with an error");
                    }
                    return if stopping { Closed::Shutdown } else { Closed::Done };
                }
                () = tokio::time::sleep_until(wake) => {
                    if let Some((at, why)) = slot.activity.deadline(&self.limits)
                        && at <= Instant::now()
                    {
                        return why.into();
                    }
                }
                () = slot.evict.notified() => return Closed::Evicted,
                _ = stopped.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// Check the token, bound the body, and hand the request to the router.
    async fn handle(&self, request: Request<Incoming>, activity: &Arc<Activity>) -> Response {
        let _in_progress = activity.begin_request();
        if let Err(refusal) = self.auth.check(request.uri().path(), request.headers()) {
            self.count_refused(refusal.reason());
            return refusal.into_response();
        }
        let expired = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + self.limits.body_timeout;
        let request = request.map(|body| axum::body::Body::new(DeadlineBody::new(body, deadline, expired.clone())));
        let response = match self.router.clone().call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if !expired.load(Ordering::Relaxed) {
            return response;
        }
        self.count_refused("body_timeout");
        let ms = self.limits.body_timeout.as_millis();
        let message = format!("request body not received within {ms} ms");
        (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], Json(serde_json::json!({ "error": message })))
            .into_response()
    }

    fn count_refused(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.refused.with_label_values(&[reason]).inc();
        }
    }
}

/// Re-read the certificate on SIGHUP until the server stops.
fn reload_on_sighup(reloader: Arc<CertReloader>, mut stopped: watch::Receiver<bool>) -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = hangup.recv() => match received {
                        Some(()) => reloader.reload_logged(),
                        None => break,
                    },
                    _ = stopped.wait_for(|s| *s) => break,
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (reloader, &mut stopped);
    Ok(())
}

/// Every reason a connection closes for, as `kaudit_http_connections_closed_total`'s label.
pub(crate) fn closed_reasons() -> impl Iterator<Item = &'static str> {
    Closed::ALL.into_iter().map(Closed::reason)
}

/// Every reason a request is refused for, as `kaudit_http_requests_refused_total`'s label.
pub(crate) fn refused_reasons() -> impl Iterator<Item = &'static str> {
    crate::auth::Refusal::REASONS.into_iter().chain(["body_timeout"])
}
