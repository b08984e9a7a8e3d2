//! One scrape: core 0 takes its own snapshot and asks every other core for
//! theirs over the request mesh (a [`CoreMsg::Metrics`], answered with a
//! [`CoreAnswer::Metrics`] by the core itself), then renders them all.
//!
//! A core that does not answer within [`GATHER_TIMEOUT`] (only possible while
//! the server stops) is left out and counted in `orderd_scrape_cores_missing`.
//! Its ticket is then never reused: a late answer lands in a slot nobody
//! waits for, instead of in some other frame's.

use std::time::Duration;

use super::render::{render, Scrape};
use super::snapshot::{self, CoreSnapshot};
use crate::runtime::dispatch::{CoreAnswer, CoreMsg};
use crate::runtime::CoreCtx;

/// How long a scrape waits for the other cores' snapshots.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Gather every core's snapshot and render the exposition text.
pub async fn scrape(ctx: &CoreCtx) -> String {
    let (me, cores) = {
        let core = ctx.core.borrow();
        (core.index(), core.cores())
    };
    let mut snapshots: Vec<Option<CoreSnapshot>> = vec![None; cores];
    if let Some(mesh) = &ctx.mesh {
        let gather = async {
            let mut tickets = Vec::with_capacity(cores);
            for peer in (0..cores).filter(|&p| p != me) {
                let Some(ticket) = mesh.send(me, peer, CoreMsg::Metrics).await else { continue };
                tickets.push((peer, ticket));
            }
            for (peer, ticket) in tickets {
                let done = mesh.tickets.wait(ticket).await;
                if let (Some(slot), CoreAnswer::Metrics(snapshot)) = (snapshots.get_mut(peer), done) {
                    *slot = Some(*snapshot);
                }
            }
        };
        futures_lite::future::or(gather, glommio::timer::sleep(GATHER_TIMEOUT)).await;
    }
    if let Some(slot) = snapshots.get_mut(me) {
        let core = ctx.core.borrow();
        *slot = Some(snapshot::take(&core, Some(&ctx.commit), ctx.mesh.as_deref().map_or(0, |m| m.tickets.in_use() as u64)));
    }
    let mut out = String::with_capacity(16 * 1024 * cores.max(1));
    let process = super::process::Process::read();
    if render(&mut out, &Scrape { server_id: ctx.server_id, cores: &snapshots, recovered: ctx.recovered, process }).is_err() {
        tracing::error!("metrics: rendering into a String failed");
    }
    out
}
