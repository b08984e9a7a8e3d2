//! The terminal: raw mode and the alternate screen for the life of a
//! [`Screen`] (left on drop, and on a panic through the hook ratatui
//! installs), the keys that quit, and the signals that stop the view.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::render::render;
use super::state::TopState;
use super::TopError;

/// The terminal in raw mode on the alternate screen.
pub struct Screen {
    terminal: DefaultTerminal,
    restored: bool,
}

impl Screen {
    /// Enter raw mode and the alternate screen. Installs a panic hook that
    /// restores the terminal before the panic message is printed.
    ///
    /// # Errors
    /// Standard output is not a terminal, or the terminal refused.
    pub fn enter() -> Result<Screen, TopError> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Screen { terminal, restored: false }),
            Err(e) => {
                // Undo whatever part of the set-up succeeded (raw mode).
                let _ = ratatui::try_restore();
                Err(TopError::terminal("set up")(e))
            }
        }
    }

    /// Draw `state`.
    ///
    /// # Errors
    /// The terminal could not be written.
    pub fn draw(&mut self, state: &TopState) -> Result<(), TopError> {
        self.terminal.draw(|frame| render(frame, state)).map(drop).map_err(TopError::terminal("draw on"))
    }

    /// Leave the alternate screen and raw mode.
    ///
    /// # Errors
    /// The terminal could not be restored.
    pub fn leave(mut self) -> Result<(), TopError> {
        self.restored = true;
        ratatui::try_restore().map_err(TopError::terminal("restore"))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if !self.restored {
            let _ = ratatui::try_restore();
        }
    }
}

/// Whether `key` quits the view: `q`, Esc or Ctrl-C (in raw mode Ctrl-C
/// arrives as a key, not as SIGINT).
#[must_use]
pub fn is_quit(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c' | 'C') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Time the view has after SIGINT, SIGTERM or SIGHUP to stop by itself
/// (restoring the terminal) before the process exits anyway. A terminal
/// that went away (SIGHUP: the tmux session or ssh link closed) reads as
/// endless EOF, on which crossterm's event poll spins without returning,
/// so the view would never see the flag.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(1);

/// A flag raised by SIGINT, SIGTERM or SIGHUP, so the view stops and
/// restores the terminal instead of dying in raw mode; a thread exits the
/// process with `128 + signal` if the view has not stopped
/// [`SIGNAL_GRACE`] later.
///
/// # Errors
/// The handlers or their thread could not be set up.
pub fn stop_signals() -> Result<Arc<AtomicBool>, TopError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(TopError::Signals)?;
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("orderd-top-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                flag.store(true, Ordering::Relaxed);
                std::thread::sleep(SIGNAL_GRACE);
                std::process::exit(128 + signal);
            }
        })
        .map_err(TopError::Signals)?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_esc_and_ctrl_c_quit_and_nothing_else_does() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(is_quit(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!is_quit(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!is_quit(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
        let mut release = key(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert!(!is_quit(&release));
    }
}
