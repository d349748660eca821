//! Connections: accepting, bounding and timing out TCP connections before
//! any request reaches the router.
//!
//! nmr serves its one service (`http::Service`) through hyper's HTTP/1
//! connection builder itself, to set what a ready-made `serve` would not:
//!
//! - At most `server.max_connections` connections are served at once; the
//!   accept loop waits for a free slot, so further clients wait in the
//!   kernel's listen backlog instead of costing a file descriptor each.
//! - Every connection's socket is wrapped in [`TimedIo`], which closes it
//!   when the client takes longer than `server.header_timeout` to send a
//!   request line and headers (from the connection's start, or from the
//!   first byte of the next request), or sits idle between requests longer
//!   than `server.keep_alive_timeout`. While a request is being served the
//!   clock stops; a stalled body is the dispatcher's to time out
//!   (`server.body_timeout`).
//! - Buffers grow with the bytes received: hyper reads in small chunks and
//!   the dispatcher's body buffer grows as data arrives.
//! - Each connection's service is made for its peer address (the
//!   `for_peer` argument of [`serve`], `http::Service::for_peer`), so a
//!   request needs no extensions map to carry it.
//! - On shutdown, idle connections close at once and busy ones finish their
//!   request (for at most [`SHUTDOWN_GRACE`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::workers::Workers;

/// How often a busy connection's socket looks again at its phase.
const RECHECK: Duration = Duration::from_secs(1);

/// How long busy connections may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The connection settings of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

/// Where a connection is in its request cycle.
const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// A connection's phase, shared by its socket wrapper and its service.
struct Phase {
    /// [`HEAD`] (waiting for a request's head), [`BUSY`] (a request is being
    /// served) or [`IDLE`] (between requests).
    phase: AtomicU8,
    /// Milliseconds since `epoch` when the phase began, or (while idle) when
    /// bytes last moved.
    since: AtomicU64,
    epoch: Instant,
}

impl Phase {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn enter(&self, phase: u8) {
        // A busy connection has no deadline, so it needs no clock reading.
        if phase != BUSY {
            self.since.store(self.now(), Ordering::Relaxed);
        }
        self.phase.store(phase, Ordering::Relaxed);
    }
}

/// A socket that enforces the header and keep-alive timeouts of its
/// connection: a read that waits past the deadline of the current phase
/// fails with `TimedOut`, and hyper closes the connection.
pub struct TimedIo<T> {
    inner: T,
    phase: Arc<Phase>,
    limits: Limits,
    sleep: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    /// A response still streaming out keeps the connection alive.
    fn wrote(&self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0)
            && self.phase.phase.load(Ordering::Relaxed) == IDLE
        {
            self.phase.since.store(self.phase.now(), Ordering::Relaxed);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let since =
            self.phase.epoch + Duration::from_millis(self.phase.since.load(Ordering::Relaxed));
        match self.phase.phase.load(Ordering::Relaxed) {
            HEAD => Some(since + self.limits.header_timeout),
            IDLE => Some(since + self.limits.keep_alive_timeout),
            _ => None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && self.phase.phase.load(Ordering::Relaxed) == IDLE {
                    // The first byte of the next request: its head is due.
                    self.phase.enter(HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                // While a request is served there is no deadline, but hyper
                // polls this read only when it has other work: look again
                // every second so the idle deadline starts to count.
                let (deadline, expires) = match self.deadline() {
                    Some(deadline) => (deadline, true),
                    None => (Instant::now() + RECHECK, false),
                };
                // The timer is moved only when it would fire too late (or
                // has fired): a deadline that moved later is found when the
                // earlier timer fires, so most reads touch no timer at all.
                if self.sleep.is_elapsed() || self.sleep.deadline() > deadline {
                    self.sleep.as_mut().reset(deadline);
                }
                match self.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) if expires && Instant::now() >= deadline => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client took too long (server.header_timeout or server.keep_alive_timeout)",
                        )));
                    }
                    Poll::Ready(()) => self.sleep.as_mut().reset(deadline),
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    /// Forwarded, so hyper writes a response's head and body in one
    /// `writev` instead of first copying the body into its head buffer
    /// (which it does for a writer that is not vectored).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the process's open-files soft limit to its hard limit; returns
/// both figures after the change, or why it failed.
pub fn raise_open_files_limit() -> Result<(u64, u64), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error().to_string());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error().to_string());
            }
            limit = raised;
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// A request as hyper hands it to the service.
type HyperRequest = http::Request<hyper::body::Incoming>;

/// What serves a connection's requests: `http::Service` for one peer
/// (any `Clone + Send` service of hyper requests answering warp responses).
pub trait ConnectionService:
    Service<HyperRequest, Response = warp::reply::Response, Error = Infallible> + Clone + Send + 'static
{
}

impl<S> ConnectionService for S where
    S: Service<HyperRequest, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static
{
}

/// One connection: `stream` served by hyper's HTTP/1 `http` builder with
/// `service`, within the timeouts of `limits` ([`TimedIo`]).
fn connection<S>(
    http: &hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    limits: Limits,
    service: S,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>
where
    S: ConnectionService,
    S::Future: Send + 'static,
{
    let phase = Arc::new(Phase {
        phase: AtomicU8::new(HEAD),
        since: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let io = TimedIo {
        inner: stream,
        phase: phase.clone(),
        limits,
        sleep: Box::pin(tokio::time::sleep(limits.header_timeout)),
    };
    let per_request = hyper::service::service_fn(move |request: HyperRequest| {
        phase.enter(BUSY);
        let phase = phase.clone();
        let mut service = service.clone();
        async move {
            let response = service.call(request).await;
            phase.enter(IDLE);
            response
        }
    });
    http.serve_connection(TokioIo::new(io), per_request)
}

/// Serves, on `listener` within `limits` until `shutdown` resolves, each
/// connection on one of `workers` with the service `for_peer` makes for its
/// peer address (`http::Service::for_peer`); then lets busy connections
/// finish.
pub async fn serve<S>(
    listener: TcpListener,
    workers: &Workers,
    for_peer: impl Fn(std::net::SocketAddr) -> S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: ConnectionService,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // TimedIo enforces the header timeout, so that it can differ from
        // the keep-alive timeout.
        .header_read_timeout(None)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    crate::limits::log_limited(log::Level::Warn, "accept", format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The socket leaves the accept loop's driver for its worker's.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let watcher = graceful.watcher();
        let service = for_peer(peer);
        let http = http.clone();
        workers.spawn(move || async move {
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                let connection = connection(&http, stream, limits, service);
                if let Err(e) = watcher.watch(connection).await {
                    log::debug!("connection from {peer} ended: {e}");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("some connections were still busy {SHUTDOWN_GRACE:?} after the shutdown signal");
    }
}
