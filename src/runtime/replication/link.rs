//! A leader core's link to one follower core: a task on the leader's core
//! that keeps one connection to the follower, sends the oldest batch of
//! events the follower has not acknowledged (again, after a broken
//! connection: the follower skips what it has) and, on each answer, moves
//! the core's replication point so that the replies waiting for it leave.
//! One batch is in flight at a time; the events logged meanwhile make the
//! next one (the group commit's rhythm, across nodes).

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::{decode_server_frame, Encoder, ServerFrame};
use orderd_protocol::frame::{FrameCheck, FrameLimits};
use orderd_protocol::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use orderd_protocol::message::{Hello, Replicate, Request};
use orderd_protocol::{Reply, Status};

use crate::cluster::map::Owner;
use crate::runtime::commit::Commit;
use crate::runtime::core::{now_ms, Core};

/// How long one exchange (connect and handshake, or a batch and its
/// answer) may take before the connection is dropped and made again.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(2);

/// The pause before trying an unreachable follower again.
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// Bytes read at a time.
const READ_CHUNK: usize = 64 << 10;

/// One connection to a follower core.
struct Conn {
    stream: TcpStream,
    rx: FrameBuffer,
    tx: Vec<u8>,
    encoder: Encoder,
    correlation: u64,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

/// Runs link `at` of `core` until it retires or breaks.
pub async fn run(core: Rc<RefCell<Core>>, commit: Rc<Commit>, at: usize) {
    let (cluster, me, my_core, dest) = {
        let c = core.borrow();
        let Some(cluster) = c.cluster.clone() else { return };
        let Some(link) = c.replication.links.get(at) else { return };
        (Arc::clone(&cluster), cluster.node().to_owned(), c.index() as u16, link.dest.clone())
    };
    tracing::info!(follower = %dest, core = my_core, "replication link starts");
    let mut conn: Option<Conn> = None;
    loop {
        let Some((events, through)) = next_batch(&core, at).await else {
            tracing::info!(follower = %dest, core = my_core, "replication link ends");
            return;
        };
        if conn.is_none() {
            match within(connect(&cluster, &dest)).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    down(&core, at, &dest, &e.to_string());
                    glommio::timer::sleep(RETRY_EVERY).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let batch = Replicate { map_version: cluster.version(), through, leader: me.clone(), core: my_core, events };
        match within(c.exchange(batch)).await {
            Ok(Reply::Replicated(_)) => {
                core.borrow_mut().replication.acked(at, now_ms());
                commit.release();
            }
            Ok(Reply::Rejected(r)) if r.code == Status::Moved.code() => {
                // The follower's map and this node's differ: one of them is
                // behind (or this node leads the shard no longer). Both read
                // the map; this core follows it before the batch goes again.
                cluster.nudge();
                glommio::timer::sleep(RETRY_EVERY).await;
                core.borrow_mut().follow_replication();
            }
            Ok(Reply::Rejected(r)) if r.code == Status::ReplicaGap.code() => {
                let why = format!("the follower's copy of shard {} is at position {}", r.detail >> 48, r.detail & ((1 << 48) - 1));
                tracing::error!(follower = %dest, reason = why, "a follower's copy does not follow its leader: it must be made again; its shards refuse state changes");
                let mut c = core.borrow_mut();
                if let Some(link) = c.replication.links.get_mut(at) {
                    link.broken = Some(why);
                }
                return;
            }
            Ok(other) => {
                tracing::warn!(follower = %dest, reply = ?other, "a follower refused a batch of replicated events; sending it again");
                glommio::timer::sleep(RETRY_EVERY * 5).await;
            }
            Err(e) => {
                conn = None;
                down(&core, at, &dest, &e.to_string());
                glommio::timer::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// How often a core looks for a changed map between state changes.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// A core's replication supervisor: follows the map's followers (also when
/// no state change comes) and starts a link task for each new follower core.
pub async fn supervise(core: Rc<RefCell<Core>>, commit: Rc<Commit>) {
    let mut point = u64::MAX;
    loop {
        let unstarted = {
            let mut c = core.borrow_mut();
            c.follow_replication();
            if let Some(cluster) = c.cluster.clone() {
                let (_, live) = cluster.map();
                for link in &mut c.replication.links {
                    link.gone = !live.iter().any(|n| n.node == link.dest.node);
                }
            }
            if c.replication.point() != point {
                // Links retired by a changed map no longer hold replies back.
                point = c.replication.point();
                commit.release();
            }
            std::mem::take(&mut c.replication.unstarted)
        };
        for at in unstarted {
            glommio::spawn_local(run(Rc::clone(&core), Rc::clone(&commit), at)).detach();
        }
        glommio::timer::sleep(FOLLOW_EVERY).await;
    }
}

/// Notes that the follower of link `at` is unreachable.
fn down(core: &Rc<RefCell<Core>>, at: usize, dest: &Owner, error: &str) {
    let mut c = core.borrow_mut();
    let Some(link) = c.replication.links.get_mut(at) else { return };
    if link.down_since_ms.is_none() {
        tracing::warn!(follower = %dest, error, "a follower is unreachable; retrying (its shards refuse state changes after 1 s)");
        link.down_since_ms = Some(now_ms());
    }
}

/// The oldest batch link `at` must send (marked sent), once there is one;
/// `None` once the link retired or broke.
async fn next_batch(core: &Rc<RefCell<Core>>, at: usize) -> Option<(Vec<u8>, u64)> {
    futures_lite::future::poll_fn(|cx| {
        let mut c = core.borrow_mut();
        let Some(link) = c.replication.links.get_mut(at) else { return Poll::Ready(None) };
        if link.retired || link.broken.is_some() {
            return Poll::Ready(None);
        }
        match link.batches.front_mut() {
            Some(b) if !link.held => {
                b.sent = true;
                Poll::Ready(Some((b.bytes.clone(), b.through)))
            }
            _ => {
                link.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

/// `work`, or a timeout after [`EXCHANGE_LIMIT`].
async fn within<T>(work: impl std::future::Future<Output = Result<T, LinkError>>) -> Result<T, LinkError> {
    futures_lite::future::or(work, async {
        glommio::timer::sleep(EXCHANGE_LIMIT).await;
        Err(LinkError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 2 s")))
    })
    .await
}

/// The address of follower core `dest` among the live nodes.
fn address(cluster: &crate::cluster::OwnedShards, dest: &Owner) -> Result<SocketAddr, LinkError> {
    let (_, live) = cluster.map();
    let node = live.iter().find(|n| n.node == dest.node).ok_or_else(|| LinkError::Protocol(format!("node `{}` is not live", dest.node)))?;
    let addr = node
        .cores
        .get(usize::from(dest.core))
        .ok_or_else(|| LinkError::Protocol(format!("node `{}` has no core {}", dest.node, dest.core)))?;
    addr.to_socket_addrs()?.next().ok_or_else(|| LinkError::Protocol(format!("`{addr}` resolves to no address")))
}

async fn connect(cluster: &crate::cluster::OwnedShards, dest: &Owner) -> Result<Conn, LinkError> {
    let addr = address(cluster, dest)?;
    let stream = TcpStream::connect(addr).await.map_err(|e| LinkError::Io(e.into()))?;
    stream.set_nodelay(true).map_err(|e| LinkError::Io(e.into()))?;
    let mut conn = Conn {
        stream,
        rx: FrameBuffer::new(READ_CHUNK, FrameLimits::WIRE_MAX),
        tx: Vec::with_capacity(READ_CHUNK),
        encoder: Encoder::default(),
        correlation: 1,
    };
    let hello = Hello { client_id: 0, min_version: MIN_PROTOCOL_VERSION, max_version: PROTOCOL_VERSION };
    conn.encoder.hello(&mut conn.tx, 0, &hello).map_err(|e| LinkError::Protocol(e.to_string()))?;
    conn.flush().await?;
    match conn.recv().await? {
        ServerFrame::Welcome(w) if w.version >= 2 => {
            conn.encoder.set_version(w.version);
            Ok(conn)
        }
        ServerFrame::Welcome(w) => {
            Err(LinkError::Protocol(format!("the follower speaks protocol version {}, replication needs 2", w.version)))
        }
        other => Err(LinkError::Protocol(format!("the follower answered the handshake with {other:?}"))),
    }
}

impl Conn {
    async fn flush(&mut self) -> Result<(), LinkError> {
        self.stream.write_all(&self.tx).await?;
        self.tx.clear();
        Ok(())
    }

    async fn recv(&mut self) -> Result<ServerFrame, LinkError> {
        loop {
            match self.rx.check() {
                FrameCheck::Complete(header) => {
                    let frame = decode_server_frame(self.rx.payload(&header), &header).map_err(|e| LinkError::Protocol(e.to_string()));
                    self.rx.consume(&header);
                    return frame;
                }
                FrameCheck::Incomplete { need } => {
                    let want = self.rx.want(&FrameCheck::Incomplete { need }, READ_CHUNK);
                    let n = self.stream.read(self.rx.spare(want)).await?;
                    if n == 0 {
                        return Err(LinkError::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the follower closed the connection",
                        )));
                    }
                    self.rx.commit(n);
                }
                FrameCheck::Invalid(e) => return Err(LinkError::Protocol(format!("a bad frame from the follower: {e}"))),
            }
        }
    }

    /// Sends `batch` and returns the follower's answer.
    async fn exchange(&mut self, batch: Replicate) -> Result<Reply, LinkError> {
        let correlation = self.correlation;
        self.correlation += 1;
        self.encoder.requests(&mut self.tx, correlation, &[Request::Replicate(batch)]).map_err(|e| LinkError::Protocol(e.to_string()))?;
        self.flush().await?;
        match self.recv().await? {
            ServerFrame::Replies(c, mut replies) if c == correlation && replies.len() == 1 => {
                replies.pop().ok_or_else(|| LinkError::Protocol("no reply".into()))
            }
            ServerFrame::Error(_, e) => Err(LinkError::Protocol(format!("the follower refused the frame: {e:?}"))),
            ServerFrame::Replies(..) | ServerFrame::Events(..) | ServerFrame::Welcome(_) => {
                Err(LinkError::Protocol("an unexpected frame from the follower".into()))
            }
        }
    }
}
