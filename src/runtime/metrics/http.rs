//! The endpoint's HTTP side: a minimal HTTP/1.1 server on core 0 that
//! answers `GET /metrics` (and `HEAD`) with a fresh scrape, `/healthz`
//! (liveness: 200 while the process serves) and `/readyz` (readiness: 200
//! once the log is replayed, since the endpoint listens only then; 503
//! while the server stops), anything else with 400, 404, 405, 408 or 431,
//! and closes every connection after one response.
//!
//! It runs in its own glommio task queue with few shares and
//! `Latency::NotImportant`, so a scrape yields to the order path of core 0.
//! Each request head is bounded in size ([`MAX_REQUEST_BYTES`]) and time
//! ([`REQUEST_TIMEOUT`]), writes in time ([`WRITE_TIMEOUT`]); at most
//! [`MAX_SCRAPES`] connections are served at once, more get 503. A bad
//! request only ever affects its own connection.

use std::cell::Cell;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{Latency, Shares, TaskQueueHandle};

use super::render::CONTENT_TYPE;
use crate::runtime::listener::{self, Reserved};
use crate::runtime::{CoreCtx, StartError};

/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8192;

/// Scrape connections served at once; more are answered 503.
pub const MAX_SCRAPES: usize = 4;

/// Time a client has to send its whole request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a response may take to write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shares of the metrics task queue (the default queue has 1000).
const SHARES: usize = 10;

/// After the response, how long a closing connection discards what the
/// client still sends, so unread bytes do not reset the connection before
/// the client has read the response.
const LINGER: Duration = Duration::from_millis(200);

/// Bind the metrics address before the executors start (plain `std`
/// socket, no `SO_REUSEPORT`, like the order ports).
///
/// # Errors
/// [`StartError::MetricsPortInUse`], [`StartError::MetricsBind`].
pub fn bind(addr: SocketAddr) -> Result<Reserved, StartError> {
    // As the order ports: a port held only by a dead server's socket is
    // waited for a moment (`listener::bind_all`).
    let deadline = std::time::Instant::now() + crate::runtime::listener::BIND_RETRY_FOR;
    crate::runtime::listener::bind_retrying(addr, deadline).map_err(|e| match e {
        crate::runtime::listener::BindFailure::InUse(_) => StartError::MetricsPortInUse { addr },
        crate::runtime::listener::BindFailure::Other(source) => bind_error(addr, source),
    })
}

/// Start listening on the endpoint's reserved socket (once the log is
/// replayed, as the order ports).
///
/// # Errors
/// The port was taken meanwhile, or `listen(2)` failed.
pub fn listen(reserved: Reserved) -> Result<StdListener, StartError> {
    let addr = reserved.addr();
    reserved.listen().map_err(|source| bind_error(addr, source))
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> StartError {
    match source.kind() {
        ErrorKind::AddrInUse => StartError::MetricsPortInUse { addr },
        _ => StartError::MetricsBind { addr, source },
    }
}

/// Serve the endpoint on `listener` from the current executor (core 0)
/// until shutdown, in a task queue of its own.
///
/// # Errors
/// When the listener cannot be adopted or the task not spawned.
pub fn start(listener: &StdListener, ctx: Rc<CoreCtx>) -> Result<(), String> {
    let queue = glommio::executor().create_task_queue(Shares::Static(SHARES), Latency::NotImportant, "orderd-metrics");
    let listener = listener::adopt(listener).map_err(|e| format!("adopting the metrics listener: {e}"))?;
    let task =
        glommio::spawn_local_into(accept_loop(listener, ctx, queue), queue).map_err(|e| format!("starting the metrics task: {e}"))?;
    task.detach();
    Ok(())
}

/// Counts a scrape connection for as long as it lives.
struct Active(Rc<Cell<usize>>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

async fn accept_loop(listener: TcpListener, ctx: Rc<CoreCtx>, queue: TaskQueueHandle) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let mut stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if active.get() >= MAX_SCRAPES {
            tracing::debug!(limit = MAX_SCRAPES, "metrics: too many scrape connections");
            let _ =
                write_within(&mut stream, &response("503 Service Unavailable", "Retry-After: 1\r\n", b"too many scrapes\n", false)).await;
            let _ = stream.shutdown(Shutdown::Both).await;
            continue;
        }
        active.set(active.get() + 1);
        tracing::debug!(active = active.get(), "metrics: scrape connection accepted");
        let guard = Active(Rc::clone(&active));
        let ctx = Rc::clone(&ctx);
        let task = glommio::spawn_local_into(
            async move {
                let _guard = guard;
                serve(stream, &ctx).await;
            },
            queue,
        );
        match task {
            Ok(task) => {
                task.detach();
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot spawn a scrape task"),
        }
    }
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `GET /metrics` (`head`: `HEAD /metrics`, headers only).
    Metrics {
        /// Send no body.
        head: bool,
    },
    /// `GET /healthz`: the process serves (liveness).
    Health {
        /// Send no body.
        head: bool,
    },
    /// `GET /readyz`: the log is replayed and the server is not stopping
    /// (readiness: the endpoint listens only after the replay).
    Ready {
        /// Send no body.
        head: bool,
    },
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Judge a request head (the bytes before the blank line).
#[must_use]
pub fn judge(head: &[u8]) -> Verdict {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else { return Verdict::BadRequest };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Verdict::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() || !target.starts_with('/') {
        return Verdict::BadRequest;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Verdict::MethodNotAllowed,
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match path {
        "/metrics" => Verdict::Metrics { head },
        "/healthz" => Verdict::Health { head },
        "/readyz" => Verdict::Ready { head },
        _ => Verdict::NotFound,
    }
}

/// Where the request head ends (after its blank line), if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Why no request head was read.
enum HeadError {
    /// Past [`MAX_REQUEST_BYTES`] without its end.
    TooLarge,
    /// Not complete within [`REQUEST_TIMEOUT`].
    TimedOut,
    /// The client closed or the socket failed.
    Gone,
}

async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut filled = 0;
    let read = async {
        loop {
            if let Some(end) = head_end(&buf[..filled]) {
                buf.truncate(end);
                return Ok(());
            }
            let Some(spare) = buf.get_mut(filled..).filter(|s| !s.is_empty()) else { return Err(HeadError::TooLarge) };
            match stream.read(spare).await {
                Ok(0) => return Err(HeadError::Gone),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(HeadError::Gone),
            }
        }
    };
    futures_lite::future::or(read, async {
        glommio::timer::sleep(REQUEST_TIMEOUT).await;
        Err(HeadError::TimedOut)
    })
    .await?;
    Ok(buf)
}

/// An HTTP/1.1 response that closes the connection.
fn response(status: &str, extra_headers: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let content_type = if status.starts_with("200") { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    futures_lite::future::or(stream.write_all(bytes), async {
        glommio::timer::sleep(WRITE_TIMEOUT).await;
        Err(std::io::Error::new(ErrorKind::TimedOut, "the scraper did not read the response in time"))
    })
    .await
}

/// One scrape connection: read the head, answer, close.
async fn serve(mut stream: TcpStream, ctx: &CoreCtx) {
    let reply = match read_head(&mut stream).await {
        Ok(head) => match judge(&head) {
            Verdict::Metrics { head } => {
                let body = super::scrape::scrape(ctx).await;
                response("200 OK", "", body.as_bytes(), head)
            }
            Verdict::Health { head } => response("200 OK", "", b"ok\n", head),
            Verdict::Ready { head } if ctx.shutdown.is_triggered() => {
                response("503 Service Unavailable", "", b"stopping: finishing the frames it has, then exiting\n", head)
            }
            Verdict::Ready { head } => response("200 OK", "", b"ready\n", head),
            Verdict::NotFound => response("404 Not Found", "", b"not found: /metrics, /healthz and /readyz are served\n", false),
            Verdict::MethodNotAllowed => response("405 Method Not Allowed", "Allow: GET, HEAD\r\n", b"only GET and HEAD\n", false),
            Verdict::BadRequest => response("400 Bad Request", "", b"bad request\n", false),
        },
        Err(HeadError::TooLarge) => response("431 Request Header Fields Too Large", "", b"request head too large\n", false),
        Err(HeadError::TimedOut) => response("408 Request Timeout", "", b"request not received in time\n", false),
        Err(HeadError::Gone) => return,
    };
    if let Err(e) = write_within(&mut stream, &reply).await {
        tracing::debug!(error = %e, "metrics: response not written");
        return;
    }
    linger_close(&mut stream).await;
}

/// Send FIN, then discard what the client still sends for a moment, so a
/// client that sent more than its head still reads the response.
async fn linger_close(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let drain = async {
        let mut discarded = 0;
        while discarded < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    };
    futures_lite::future::or(drain, glommio::timer::sleep(LINGER)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_or_head_of_metrics_is_served() {
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHost: x"), Verdict::Metrics { head: false });
        assert_eq!(judge(b"GET /metrics?name[]=x HTTP/1.0"), Verdict::Metrics { head: false });
        assert_eq!(judge(b"HEAD /metrics HTTP/1.1\r\n"), Verdict::Metrics { head: true });
        assert_eq!(judge(b"GET / HTTP/1.1"), Verdict::NotFound);
        assert_eq!(judge(b"GET /metricsx HTTP/1.1"), Verdict::NotFound);
        assert_eq!(judge(b"GET /healthz HTTP/1.1"), Verdict::Health { head: false });
        assert_eq!(judge(b"HEAD /readyz HTTP/1.0"), Verdict::Ready { head: true });
        assert_eq!(judge(b"POST /metrics HTTP/1.1"), Verdict::MethodNotAllowed);
        assert_eq!(judge(b"GET /metrics"), Verdict::BadRequest);
        assert_eq!(judge(b"GET /metrics HTTP/2"), Verdict::BadRequest);
        assert_eq!(judge(b"GET  /metrics HTTP/1.1"), Verdict::BadRequest);
        assert_eq!(judge(b"GET metrics HTTP/1.1"), Verdict::BadRequest);
        assert_eq!(judge(b"\xff\xfe /metrics HTTP/1.1"), Verdict::BadRequest);
        assert_eq!(judge(b""), Verdict::BadRequest);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn responses_close_and_carry_their_length() {
        let r = String::from_utf8(response("200 OK", "", b"abc", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(r.contains("Content-Length: 3\r\nConnection: close\r\n\r\nabc"));
        let h = String::from_utf8(response("200 OK", "", b"abc", true)).unwrap();
        assert!(h.ends_with("\r\n\r\n") && h.contains("Content-Length: 3"));
    }
}
