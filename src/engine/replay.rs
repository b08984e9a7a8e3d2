//! Recovery: rebuilding a shard from its events.
//!
//! [`Shard::replay`] feeds every event to [`Shard::apply_event`], the same
//! function that applied it the first time, so the rebuilt shard equals the
//! original ([`Shard`]'s `PartialEq` compares the canonical state). An event
//! that is not a legal step stops the replay with its position: a log that
//! passed its CRC but does not fit the state is a bug or a foreign log, and
//! recovery must not guess.

use crate::engine::apply::EventError;
use crate::engine::config::ShardConfig;
use crate::engine::event::Event;
use crate::engine::shard::Shard;

/// An event that could not be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event {index} (kind {kind}) cannot be replayed: {source}")]
pub struct ReplayError {
    /// Position of the event in the replayed sequence, from 0.
    pub index: usize,
    /// Its kind.
    pub kind: u8,
    /// Why it does not apply.
    pub source: EventError,
}

impl Shard {
    /// A shard with `config` rebuilt from `events`, oldest first.
    ///
    /// The shard id is `config.shard_id`: it must be the id of the shard that
    /// wrote the events (their order ids carry it), else the first placed
    /// order fails with [`EventError::WrongOrderId`].
    ///
    /// # Errors
    /// The first event that is not a legal step, with its position.
    pub fn replay<'a>(config: ShardConfig, events: impl IntoIterator<Item = &'a Event>) -> Result<Shard, ReplayError> {
        let mut shard = Shard::new(config);
        for (index, event) in events.into_iter().enumerate() {
            shard.apply_event(event).map_err(|source| ReplayError { index, kind: event.kind(), source })?;
        }
        Ok(shard)
    }
}
