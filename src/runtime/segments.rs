//! Each core's next log segment, prepared ahead of need off the core.
//!
//! A task per core asks its [`LogWriter`](crate::log::LogWriter) whether it
//! wants a prepared segment and, if so, has glommio's blocking pool make
//! one (`log::segment::prepare`: created, allocated, synced), then hands it
//! to the writer, which renames it into place at the next rotation. The
//! core never waits for it: if the segment is not ready when the log fills
//! one, rotation creates it in place as before.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::core::Core;
use crate::log::segment;

/// How often a core looks whether its log wants a prepared segment.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Pause after a failed preparation (disk full, say) before trying again.
const AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Runs until its task is dropped. `ORDERD_PREPARE_SEGMENTS` chooses, for
/// before/after measurements (README, Durability): `off` (create at
/// rotation, as before), `zero` (also write the zeros ahead), anything else
/// allocate ahead.
pub async fn preparer(core: Rc<RefCell<Core>>) {
    let mode = std::env::var("ORDERD_PREPARE_SEGMENTS").unwrap_or_default();
    if mode == "off" {
        return;
    }
    let zero = mode == "zero";
    loop {
        glommio::timer::sleep(CHECK_EVERY).await;
        let Some((dir, bytes)) = core.borrow().log().wants_prepared() else { continue };
        let index = core.borrow().index();
        match glommio::executor().spawn_blocking(move || segment::prepare(&dir, bytes, zero)).await {
            Ok(path) => {
                tracing::debug!(core = index, file = %path.display(), "next log segment prepared");
                core.borrow_mut().log_mut().set_prepared(path);
            }
            Err(e) => {
                tracing::warn!(core = index, error = %e, "cannot prepare the next log segment ahead of need; rotation will create it in place");
                glommio::timer::sleep(AFTER_FAILURE).await;
            }
        }
    }
}
