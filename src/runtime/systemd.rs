//! Readiness and status for a service manager (systemd `Type=notify`,
//! `tuning/orderd.service`): `READY=1` once every core listens, a `STATUS=`
//! line with the replay's progress while the log is recovered (each one
//! extending the start timeout, so a long replay that progresses is not
//! killed while a stuck one still is), and `STOPPING=1` when a signal asks
//! the server to stop. Without `$NOTIFY_SOCKET` (not under systemd) every
//! call does nothing.

use std::net::SocketAddr;
use std::time::Duration;

use sd_notify::NotifyState;

/// How far each replay progress report pushes systemd's start timeout.
pub const EXTEND_START_BY: Duration = Duration::from_secs(30);

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// Every core listens on `addrs`.
pub fn ready(addrs: &[SocketAddr]) {
    let status = format!("serving on {}", addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The log replay's progress (a line of `log::recover`).
pub fn replaying(progress: &str) {
    let usec = u32::try_from(EXTEND_START_BY.as_micros()).unwrap_or(u32::MAX);
    notify(&[NotifyState::Status(progress), NotifyState::ExtendTimeoutUsec(usec)]);
}

/// A signal asked the server to stop; it drains.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining connections")]);
}
