//! The Prometheus metrics endpoint (`--metrics-listen`, off with
//! `--no-metrics`).
//!
//! Every core keeps its own counters and histograms ([`CoreMetrics`], owned
//! by its [`Core`](super::core::Core); plain integers, no atomics, no locks)
//! beside the counters it already had. Nothing is shared on the order path:
//! the numbers are only copied when a scrape asks. The HTTP server runs on
//! core 0 in a low-priority task queue; a scrape asks every other core for
//! a snapshot over the existing request mesh, then renders the text format
//! with one series per core (`core="N"`).
//!
//! # Layout
//! - [`histogram`]: fixed-bucket histograms and their buckets.
//! - [`counters`]: [`CoreMetrics`], requests by kind, rejections by reason.
//! - [`snapshot`]: [`snapshot::CoreSnapshot`] and [`snapshot::SCALARS`], the
//!   one-line-per-metric table of per-core counters and gauges.
//! - [`scrape`]: gathering the snapshots of every core.
//! - [`render`]: the text exposition format.
//! - [`http`]: binding, the accept loop and the HTTP/1.1 handler.

pub mod counters;
pub mod histogram;
pub mod http;
pub mod process;
pub mod render;
pub mod scrape;
pub mod snapshot;

pub use counters::CoreMetrics;
