//! What one connection is doing, as seen from its bytes and its requests, and the deadline that
//! follows from it:
//!
//! * **idle**: no request in progress and no byte of a new one: closed `idle_timeout` after the
//!   last byte moved either way (a new connection that sends nothing is idle from its accept);
//! * **head**: bytes of a new request arrived but its headers are not complete: closed
//!   `header_timeout` after the first of those bytes (this also covers a TLS handshake);
//! * **busy**: a request is being handled: no connection deadline; its body has its own
//!   ([`DeadlineBody`]) and the handler is ours.
//!
//! [`Tracked`] wraps the socket and records reads and writes; [`Activity::begin_request`] marks a
//! request from head to answer. hyper's own `header_read_timeout` is not used: it starts when hyper
//! waits for a head, so it would also close every keep-alive connection after `header_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Limits;

/// One connection's state, shared by its socket wrapper, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// ms since `base` of the last byte read or written, or of a request's start or end.
    last: AtomicU64,
    /// 1 + ms since `base` of the first byte of a request whose head is not complete; 0: none.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

/// What a deadline, once reached, means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Header,
}

impl Activity {
    /// `base`: the server's start, so that [`Activity::last_ms`] compares across connections.
    pub fn new(base: Instant) -> Self {
        let now = base.elapsed().as_millis() as u64;
        Self { base, last: AtomicU64::new(now), head_since: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    fn on_read(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_since.compare_exchange(0, self.now_ms() + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A request's head is complete; the guard marks it done when dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }

    /// No request in progress.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// ms since `base` of the last activity, for choosing whom to evict.
    pub fn last_ms(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// When the connection must be closed if nothing changes, and why; `None` while busy.
    pub fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        if !self.is_idle() {
            return None;
        }
        let ms = |v: u64| self.base + std::time::Duration::from_millis(v);
        match self.head_since.load(Ordering::Relaxed) {
            0 => Some((ms(self.last_ms()) + limits.idle_timeout, Expiry::Idle)),
            since => Some((ms(since - 1) + limits.header_timeout, Expiry::Header)),
        }
    }
}

/// Marks one request in progress.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A socket that reports its reads and writes to an [`Activity`].
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The error a body past its deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the body timeout")]
pub struct BodyTimeout;

/// A request body that must be complete by a deadline; past it, it fails with [`BodyTimeout`]
/// and sets `expired`, so the server answers 408 whatever the handler made of the error.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        Self { inner, sleep: Box::pin(tokio::time::sleep_until(deadline)), expired }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_timeout: Duration::from_millis(100),
            body_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_then_head_then_busy() {
        let a = Arc::new(Activity::new(Instant::now()));
        let start = Instant::now();
        assert_eq!(a.deadline(&limits()), Some((start + Duration::from_millis(1000), Expiry::Idle)));
        tokio::time::advance(Duration::from_millis(50)).await;
        a.on_read();
        let (at, why) = a.deadline(&limits()).unwrap();
        assert_eq!((at - start, why), (Duration::from_millis(150), Expiry::Header));
        tokio::time::advance(Duration::from_millis(30)).await;
        a.on_read();
        assert_eq!(a.deadline(&limits()).unwrap().0 - start, Duration::from_millis(150), "first byte counts");
        let guard = a.begin_request();
        assert_eq!(a.deadline(&limits()), None);
        tokio::time::advance(Duration::from_millis(500)).await;
        a.on_read();
        drop(guard);
        let (at, why) = a.deadline(&limits()).unwrap();
        assert_eq!((at - start, why), (Duration::from_millis(1580), Expiry::Idle));
    }
}
