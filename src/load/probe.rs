//! `--read-probe-ms`: reads sent one at a time on a connection of their
//! own while the load runs, alternating a product's stock and the server's
//! stats, so that a report says how long reads wait behind the load (an
//! operator's `orderd admin stock` during a sale; a full disk refusing
//! every change must not make reads slow).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orderd_protocol::client::{Client, ClientConfig};
use serde::Serialize;

use super::LoadError;

/// What the probe measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadProbeReport {
    /// Pause between two reads, ms.
    pub every_ms: u64,
    /// Reads answered.
    pub reads: u64,
    /// Reads that failed (refused or a transport error).
    pub failed: u64,
    /// Latency of the answered reads, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// The slowest, µs.
    pub max_us: u64,
}

/// The running probe.
pub struct ReadProbe {
    every: Duration,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Histogram<u64>, u64)>,
}

impl ReadProbe {
    /// Connects to `server` and reads product `product`'s stock and the
    /// stats, one at a time, `every` apart, until [`ReadProbe::finish`].
    ///
    /// # Errors
    /// The connection cannot be made or its first read fails.
    pub fn start(server: &str, config: &ClientConfig, product: u64, every: Duration) -> Result<ReadProbe, LoadError> {
        let what = "starting the read probe (--read-probe-ms)";
        let mut client = Client::connect(server, config.clone()).map_err(|e| LoadError::client(server, what, e))?;
        client.stock(product).map_err(|e| LoadError::client(server, what, e))?;
        // 1 µs to 60 s, three significant figures.
        let mut latency =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| LoadError::Setting(format!("read probe histogram: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("load-read-probe".into())
            .spawn(move || {
                let mut failed = 0u64;
                let mut turn = 0u64;
                while !stopping.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answered = if turn.is_multiple_of(2) { client.stock(product).map(drop) } else { client.stats().map(drop) };
                    turn += 1;
                    match answered {
                        Ok(()) => latency.saturating_record(sent.elapsed().as_micros().max(1) as u64),
                        Err(_) => failed += 1,
                    }
                    std::thread::sleep(every);
                }
                (latency, failed)
            })
            .map_err(|e| LoadError::Setting(format!("cannot start the read probe's thread: {e}")))?;
        Ok(ReadProbe { every, stop, thread })
    }

    /// Stops the probe and reports.
    ///
    /// # Errors
    /// The probe's thread panicked.
    pub fn finish(self) -> Result<ReadProbeReport, LoadError> {
        self.stop.store(true, Ordering::Relaxed);
        let (latency, failed) = self.thread.join().map_err(|_| LoadError::Setting("the read probe's thread panicked".into()))?;
        Ok(ReadProbeReport {
            every_ms: self.every.as_millis() as u64,
            reads: latency.len(),
            failed,
            p50_us: latency.value_at_quantile(0.5),
            p99_us: latency.value_at_quantile(0.99),
            max_us: latency.max(),
        })
    }
}
