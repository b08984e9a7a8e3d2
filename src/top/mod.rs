//! `orderd top`: a live terminal view (ratatui) of a server's aggregates —
//! orders/s and GMV over the 1 s, 10 s and 60 s windows, the totals, an
//! orders/s sparkline kept from successive polls, the best sellers and the
//! sold-out products — refreshed every interval, usable during a load run.
//!
//! ```text
//! orderd top [--server HOST:PORT] [--top N] [--interval-ms MS]
//! ```
//!
//! `--server` defaults to `127.0.0.1:7070` or `$ORDERD_SERVER`, as for
//! `orderd admin`. An unreachable server is shown in the view and retried
//! every interval; q, Esc or Ctrl-C quits and restores the terminal.
//!
//! - [`state`]: [`TopState`], what the view shows, fed by polls.
//! - [`render`]: the view, a pure function of a [`TopState`].
//! - [`poll`]: the polling thread (the view never waits on the network).
//! - [`term`]: raw mode and the alternate screen, the quit keys, signals.
//! - [`TopError`]: what stops the view with an error.

mod error;
pub mod poll;
pub mod render;
pub mod state;
pub mod term;

use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::time::Duration;

use orderd_protocol::limits::MAX_TOP_PRODUCTS;
use ratatui::crossterm::event::{self, Event};

pub use self::error::TopError;
pub use self::state::TopState;
use self::term::Screen;

/// How often the view checks for keys, signals and new polls.
const TICK: Duration = Duration::from_millis(50);

/// `orderd top`: the live view's options.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TopArgs {
    /// The orderd server to watch (any of its cores).
    #[arg(long, value_name = "HOST:PORT", default_value = crate::admin::DEFAULT_SERVER, env = "ORDERD_SERVER")]
    pub server: String,
    /// How many best-selling products to list.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=MAX_TOP_PRODUCTS as i64))]
    pub top: u32,
    /// Time between polls of the server, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval_ms: u64,
}

/// Run the view until q, Esc, Ctrl-C or a termination signal.
///
/// # Errors
/// The terminal cannot be used, or the view's threads or signal handlers
/// cannot be set up. An unreachable server is not an error: it is shown.
pub fn run(args: &TopArgs) -> Result<(), TopError> {
    let interval = Duration::from_millis(args.interval_ms);
    let stop = term::stop_signals()?;
    let updates = poll::spawn(args.server.clone(), args.top, interval)?;
    let mut state = TopState::new(args.server.clone(), interval, args.top);
    let mut screen = Screen::enter()?;
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        if dirty {
            screen.draw(&state)?;
            dirty = false;
        }
        if event::poll(TICK).map_err(TopError::terminal("read keys from"))? {
            match event::read().map_err(TopError::terminal("read keys from"))? {
                Event::Key(key) if term::is_quit(&key) => break,
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        loop {
            match updates.try_recv() {
                Ok(update) => {
                    state.apply(update);
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(TopError::PollerStopped),
            }
        }
    }
    screen.leave()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        top: TopArgs,
    }

    #[test]
    fn defaults_and_bounds() {
        let args = Cli::try_parse_from(["top"]).unwrap().top;
        assert_eq!((args.top, args.interval_ms), (10, 1000));
        let args = Cli::try_parse_from(["top", "--server", "10.0.0.1:7070", "--top", "3", "--interval-ms", "250"]).unwrap().top;
        assert_eq!((args.server.as_str(), args.top, args.interval_ms), ("10.0.0.1:7070", 3, 250));
        assert!(Cli::try_parse_from(["top", "--top", "1001"]).is_err());
        assert!(Cli::try_parse_from(["top", "--interval-ms", "0"]).is_err());
    }
}
