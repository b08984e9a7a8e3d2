//! Listening sockets: bound up front, listening once the log is replayed,
//! then handed to each core's executor; and the per-core accept loop.
//!
//! A socket is bound before recovery and listens only after it
//! ([`Reserved`]): a port held by another server fails the start at once,
//! the addresses are known early, and while the log is replayed (minutes,
//! for a large log) a client or a health check gets "connection refused"
//! rather than a handshake that never comes.
//!
//! glommio's own `TcpListener::bind` always sets `SO_REUSEPORT`, so a second
//! server on the same port would bind silently and steal connections. Binding
//! with `std` (no `SO_REUSEPORT`) makes a port held by any other process
//! (orderd or not) fail with a clear error, learns ephemeral ports before the
//! cores start (so every core can announce all addresses), and the bound
//! socket is then adopted by glommio through its file descriptor.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use crate::procfs::{port_holder, Holder};

use socket2::{Domain, Protocol, Socket, Type};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;

use glommio::net::TcpListener;

use super::{connection, CoreCtx, StartError};

/// Connections the kernel queues for a listener before it accepts them
/// (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// A TCP socket bound to its address, not listening yet.
pub struct Reserved {
    socket: Socket,
    addr: SocketAddr,
}

impl Reserved {
    /// Bind `addr` (port 0: an ephemeral port) without listening.
    ///
    /// # Errors
    /// The socket cannot be made or bound (`AddrInUse` when another socket
    /// listens there).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Reserved> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // As `std`'s `TcpListener::bind`: a restart must not wait for the
        // previous run's connections in TIME_WAIT. (On Linux this also lets
        // another `SO_REUSEADDR` socket bind the port while this one does not
        // listen; whichever listens first keeps it, and `listen` says so.)
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        let addr = socket.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("bound to a non-IP address"))?;
        Ok(Reserved { socket, addr })
    }

    /// The bound address (with the port chosen for port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Start listening: connections are accepted (queued) from now on.
    ///
    /// # Errors
    /// `listen(2)` failed, e.g. `AddrInUse` when another socket started
    /// listening on the port meanwhile.
    pub fn listen(self) -> std::io::Result<StdListener> {
        self.socket.listen(BACKLOG)?;
        Ok(self.socket.into())
    }
}

/// How long a start waits for a port that only a dead process's socket
/// holds. A `kill -9`ed orderd's listening sockets outlive it by tens of
/// milliseconds (its io_uring teardown runs after the process is reaped):
/// a supervisor that restarts at once would otherwise be refused with
/// "already in use".
pub const BIND_RETRY_FOR: Duration = Duration::from_secs(5);

/// How often the bind is tried again meanwhile.
const BIND_RETRY_EVERY: Duration = Duration::from_millis(20);

/// Bind core `i`'s socket on `listen`'s port + i (or an ephemeral port when
/// the port is 0), for `cores` cores, without listening yet.
///
/// The caller holds the data directory's lock, so no live orderd of this
/// directory holds these ports. A port in use is refused at once when a
/// live process holds it (the error names the process when `/proc` says
/// which); when no process does (the socket of one that just died), the
/// bind is tried again for up to `retry_for`, and a line says why.
pub fn bind_all(listen: SocketAddr, cores: usize, retry_for: Duration) -> Result<Vec<Reserved>, StartError> {
    let deadline = Instant::now() + retry_for;
    (0..cores)
        .map(|i| {
            let mut addr = listen;
            if listen.port() != 0 {
                let port = u16::try_from(usize::from(listen.port()) + i).map_err(|_| StartError::Bind {
                    addr: listen,
                    source: std::io::Error::new(ErrorKind::InvalidInput, "port + core index passes 65535"),
                })?;
                addr.set_port(port);
            }
            bind_retrying(addr, deadline).map_err(|e| match e {
                BindFailure::InUse(holder) => StartError::PortInUse { addr, holder },
                BindFailure::Other(source) => bind_error(addr, source),
            })
        })
        .collect()
}

/// Why [`bind_retrying`] gave up.
#[derive(Debug)]
pub enum BindFailure {
    /// A live process holds the port (named when `/proc` says), or a dead
    /// one's socket still did at the deadline.
    InUse(Option<String>),
    /// Any other failure.
    Other(std::io::Error),
}

/// [`Reserved::bind`], tried again until `deadline` while the port is held
/// only by the socket of a process that is gone (see [`bind_all`]).
///
/// # Errors
/// [`BindFailure`].
pub fn bind_retrying(addr: SocketAddr, deadline: Instant) -> Result<Reserved, BindFailure> {
    let mut said = false;
    loop {
        match Reserved::bind(addr) {
            Ok(reserved) => return Ok(reserved),
            Err(e) if e.kind() == ErrorKind::AddrInUse => match port_holder(addr.port()) {
                who @ Holder::Live { .. } => return Err(BindFailure::InUse(Some(who.to_string()))),
                Holder::Dead if Instant::now() < deadline => {
                    if !said {
                        said = true;
                        tracing::warn!(%addr, "the port is still held by the socket of a process that is gone (a server that just died?); trying again for a few seconds");
                    }
                    std::thread::sleep(BIND_RETRY_EVERY);
                }
                Holder::Dead | Holder::Unknown => return Err(BindFailure::InUse(None)),
            },
            Err(source) => return Err(BindFailure::Other(source)),
        }
    }
}

/// Make every reserved socket listen.
///
/// # Errors
/// As [`bind_all`], for a port taken while the log was replayed.
pub fn listen_all(reserved: Vec<Reserved>) -> Result<Vec<StdListener>, StartError> {
    reserved
        .into_iter()
        .map(|r| {
            let addr = r.addr();
            r.listen().map_err(|source| bind_error(addr, source))
        })
        .collect()
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> StartError {
    match source.kind() {
        ErrorKind::AddrInUse => StartError::PortInUse { addr, holder: None },
        ErrorKind::AddrNotAvailable => StartError::AddrNotAvailable { addr },
        _ => StartError::Bind { addr, source },
    }
}

/// Adopt a bound `std` listener into the current glommio executor.
pub fn adopt(listener: &StdListener) -> std::io::Result<TcpListener> {
    let fd = listener.try_clone()?.into_raw_fd();
    // SAFETY: `fd` is a freshly duplicated descriptor of a bound, listening
    // TCP socket that nothing else owns: `into_raw_fd` gave up ownership and
    // glommio's listener takes it over (and closes it on drop). This runs on
    // an executor thread, as `from_raw_fd` requires.
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    Ok(listener)
}

/// Accept connections until shutdown, each served by its own task.
pub async fn accept_loop(listener: TcpListener, ctx: Rc<CoreCtx>) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of descriptors or memory: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let admitted = {
            let mut core = ctx.core.borrow_mut();
            if core.counters.connections < ctx.limits.max_connections {
                core.counters.connections += 1;
                core.counters.connections_accepted += 1;
                true
            } else {
                core.counters.connections_refused += 1;
                false
            }
        };
        if admitted {
            glommio::spawn_local(connection::serve(stream, Rc::clone(&ctx))).detach();
        } else {
            tracing::debug!(limit = ctx.limits.max_connections, "connection refused: too many connections");
            glommio::spawn_local(connection::refuse(stream, Rc::clone(&ctx))).detach();
        }
    }
    tracing::info!(core = ctx.core.borrow().index(), "stopped accepting");
}
