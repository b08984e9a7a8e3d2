//! How admin output looks: one human line (or table) per answer, or JSON
//! with `--json`.
//!
//! The JSON shapes are views defined here (the protocol crate stays free of
//! serde). Every number is the protocol's integer (cents, ms since the Unix
//! epoch, units); fields are named as in the protocol, plus:
//! - order `key`: the idempotency key as 32 hex digits;
//! - order `state`: `placed`, `paid`, `cancelled` or `expired`;
//! - order `expires_ms`: `null` when the order never expires;
//! - order `amount_cents`: `qty * unit_price_cents`;
//! - stats `totals`: the sum of every core's counters;
//! - stats `storage` (a server of protocol version 2): every core's
//!   checkpoint, log retained, hot and cold orders and memory by table, and
//!   their totals (`admin::storage`).

use std::io::Write;

use orderd_protocol::message::{CoreStats, Stats};
use orderd_protocol::{Order, OrderState, StockInfo};
use serde::Serialize;

use super::load::LoadReport;
use super::plan::{Change, Plan};
use super::AdminError;

/// A product's stock, as JSON.
#[derive(Debug, Serialize)]
pub struct StockView {
    /// The product (a decimal string in JSON, `crate::json_id`).
    #[serde(serialize_with = "crate::json_id::id")]
    pub product: u64,
    /// Catalogue unit price in cents.
    pub unit_price_cents: u64,
    /// Units for sale now.
    pub available: u64,
    /// Units held by placed orders.
    pub reserved: u64,
    /// Units held by paid orders.
    pub paid: u64,
    /// Every unit ever supplied.
    pub supplied: u64,
    /// Units one user may hold (`0`: no limit).
    pub per_user_limit: u32,
    /// Payment window in ms (`0`: orders never expire).
    pub payment_window_ms: u64,
}

impl From<&StockInfo> for StockView {
    fn from(s: &StockInfo) -> Self {
        StockView {
            product: s.product,
            unit_price_cents: s.unit_price_cents,
            available: s.available,
            reserved: s.reserved,
            paid: s.paid,
            supplied: s.supplied,
            per_user_limit: s.per_user_limit,
            payment_window_ms: s.payment_window_ms,
        }
    }
}

/// An order, as JSON.
#[derive(Debug, Serialize)]
pub struct OrderView {
    /// The order id (ids are decimal strings in JSON, `crate::json_id`).
    #[serde(serialize_with = "crate::json_id::id")]
    pub id: u64,
    /// `placed`, `paid`, `cancelled` or `expired`.
    pub state: &'static str,
    /// The buyer.
    #[serde(serialize_with = "crate::json_id::id")]
    pub user: u64,
    /// The product.
    #[serde(serialize_with = "crate::json_id::id")]
    pub product: u64,
    /// Units.
    pub qty: u32,
    /// Unit price charged, in cents.
    pub unit_price_cents: u64,
    /// `qty * unit_price_cents`.
    pub amount_cents: u64,
    /// When it was placed, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it expires unpaid, ms since the Unix epoch; `None` (null): never.
    pub expires_ms: Option<u64>,
    /// The idempotency key, 32 hex digits.
    pub key: String,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            id: o.id,
            state: state_name(o.state),
            user: o.user,
            product: o.product,
            qty: o.qty,
            unit_price_cents: o.unit_price_cents,
            amount_cents: u64::from(o.qty).saturating_mul(o.unit_price_cents),
            created_ms: o.created_ms,
            expires_ms: (o.expires_ms != u64::MAX).then_some(o.expires_ms),
            key: format!("{:032x}", o.key.as_u128()),
        }
    }
}

/// One core's counters (or their totals), as JSON.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CoreView {
    /// The core id (absent in the totals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<u16>,
    /// Shards owned.
    pub shards: u64,
    /// Open client connections.
    pub connections: u64,
    /// Requests answered.
    pub requests: u64,
    /// Request frames read.
    pub frames: u64,
    /// Requests forwarded to another core.
    pub forwarded: u64,
    /// Orders accepted.
    pub orders_placed: u64,
    /// Place-order requests rejected.
    pub orders_rejected: u64,
    /// Live orders in memory.
    pub live_orders: u64,
    /// Sum of accepted orders' amounts, in cents.
    pub gmv_cents: u64,
    /// Bytes appended to the log.
    pub log_bytes: u64,
}

impl From<&CoreStats> for CoreView {
    fn from(c: &CoreStats) -> Self {
        CoreView {
            core: Some(c.core),
            shards: u64::from(c.shards),
            connections: u64::from(c.connections),
            requests: c.requests,
            frames: c.frames,
            forwarded: c.forwarded,
            orders_placed: c.orders_placed,
            orders_rejected: c.orders_rejected,
            live_orders: c.live_orders,
            gmv_cents: c.gmv_cents,
            log_bytes: c.log_bytes,
        }
    }
}

impl CoreView {
    /// The counters as table cells, in [`STATS_COLUMNS`] order.
    fn cells(&self) -> [u64; 10] {
        [
            self.shards,
            self.connections,
            self.requests,
            self.frames,
            self.forwarded,
            self.orders_placed,
            self.orders_rejected,
            self.live_orders,
            self.gmv_cents,
            self.log_bytes,
        ]
    }

    /// Add `other`'s counters (saturating: totals are for display).
    fn add(&mut self, other: &CoreView) {
        let fields = [
            (&mut self.shards, other.shards),
            (&mut self.connections, other.connections),
            (&mut self.requests, other.requests),
            (&mut self.frames, other.frames),
            (&mut self.forwarded, other.forwarded),
            (&mut self.orders_placed, other.orders_placed),
            (&mut self.orders_rejected, other.orders_rejected),
            (&mut self.live_orders, other.live_orders),
            (&mut self.gmv_cents, other.gmv_cents),
            (&mut self.log_bytes, other.log_bytes),
        ];
        for (mine, theirs) in fields {
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// Server statistics, as JSON.
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// The server's id (a decimal string in JSON, `crate::json_id`).
    #[serde(serialize_with = "crate::json_id::id")]
    pub server_id: u64,
    /// Per-core counters, in core order.
    pub cores: Vec<CoreView>,
    /// The sum over the cores.
    pub totals: CoreView,
    /// Every core's storage (absent from a server of protocol version 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<super::storage::StorageView>,
}

impl From<&Stats> for StatsView {
    fn from(s: &Stats) -> Self {
        let cores: Vec<CoreView> = s.cores.iter().map(CoreView::from).collect();
        let mut totals = CoreView::default();
        for c in &cores {
            totals.add(c);
        }
        StatsView { server_id: s.server_id, cores, totals, storage: None }
    }
}

/// The result of a load, as JSON.
#[derive(Debug, Serialize)]
pub struct LoadView<'a> {
    /// What was loaded: `workload hot`, `file catalogue.csv`.
    pub source: &'a str,
    /// Products confirmed by the server.
    pub loaded: usize,
    /// Wall time, in ms.
    pub elapsed_ms: u64,
    /// Products created.
    pub new: usize,
    /// Existing products whose settings or stock changed.
    pub updated: usize,
    /// Existing products the load did not change.
    pub unchanged: usize,
    /// Existing products whose stock differs from the file and was kept.
    pub stock_kept: usize,
    /// Existing products whose stock was adjusted (`--set-stock`).
    pub stock_adjusted: usize,
}

/// What a load would do, as JSON (`--dry-run`).
#[derive(Debug, Serialize)]
pub struct PlanView<'a> {
    /// What would be loaded.
    pub source: &'a str,
    /// Always `true`: nothing was sent.
    pub dry_run: bool,
    /// The plan.
    #[serde(flatten)]
    pub plan: &'a Plan,
}

/// The live aggregates, as JSON.
#[derive(Debug, Serialize)]
pub struct AggregatesView {
    /// Server time the windows end at, ms since the Unix epoch.
    pub now_ms: u64,
    /// `[{seconds, orders, gmv_cents}]` for 1, 10 and 60 s.
    pub windows: Vec<WindowView>,
    /// Best sellers, most units first.
    pub top: Vec<SalesView>,
    /// Sold-out products (lowest ids first, possibly cut short).
    #[serde(serialize_with = "crate::json_id::ids")]
    pub sold_out: Vec<u64>,
    /// Sold-out products in all.
    pub sold_out_count: u64,
    /// Products in the catalogue.
    pub products: u64,
    /// Units in placed or paid orders.
    pub units_sold: u64,
    /// Orders placed since the server started.
    pub orders_placed: u64,
    /// Their amounts, in cents.
    pub gmv_cents: u64,
}

/// One window of the aggregates.
#[derive(Debug, Serialize)]
pub struct WindowView {
    /// Its length.
    pub seconds: u32,
    /// Orders placed in it.
    pub orders: u64,
    /// Their amounts, in cents.
    pub gmv_cents: u64,
}

/// One best seller.
#[derive(Debug, Serialize)]
pub struct SalesView {
    /// The product (a decimal string in JSON).
    #[serde(serialize_with = "crate::json_id::id")]
    pub product: u64,
    /// Units in placed or paid orders.
    pub units_sold: u64,
    /// Units still available.
    pub available: u64,
}

/// Writes the live aggregates.
///
/// # Errors
/// The output cannot be written.
pub fn aggregates(out: &mut impl Write, a: &orderd_protocol::message::Aggregates, as_json: bool) -> Result<(), AdminError> {
    if as_json {
        let view = AggregatesView {
            now_ms: a.now_ms,
            windows: a.windows.iter().map(|w| WindowView { seconds: w.seconds, orders: w.orders, gmv_cents: w.gmv_cents }).collect(),
            top: a.top.iter().map(|t| SalesView { product: t.product, units_sold: t.units_sold, available: t.available }).collect(),
            sold_out: a.sold_out.clone(),
            sold_out_count: a.sold_out_count,
            products: a.products,
            units_sold: a.units_sold,
            orders_placed: a.orders_placed,
            gmv_cents: a.gmv_cents,
        };
        return json(out, &view);
    }
    writeln!(
        out,
        "at {}: {} orders placed since the start, GMV {}, {} units sold of {} products",
        utc(a.now_ms),
        a.orders_placed,
        money(a.gmv_cents),
        a.units_sold,
        a.products
    )?;
    for w in &a.windows {
        let per_s = w.orders as f64 / f64::from(w.seconds.max(1));
        writeln!(out, "  last {:>2} s: {:>10} orders ({per_s:.0}/s), GMV {}", w.seconds, w.orders, money(w.gmv_cents))?;
    }
    if !a.top.is_empty() {
        writeln!(out, "  best sellers:")?;
        for t in &a.top {
            writeln!(out, "    product {:>8}: {:>10} sold, {:>10} available", t.product, t.units_sold, t.available)?;
        }
    }
    if a.sold_out_count > 0 {
        let listed: Vec<String> = a.sold_out.iter().map(u64::to_string).collect();
        let more = a.sold_out_count.saturating_sub(a.sold_out.len() as u64);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        writeln!(out, "  sold out ({}): {}{more}", a.sold_out_count, listed.join(", "))?;
    }
    Ok(())
}

/// Changed products listed by the human output of a plan; the rest are counted.
pub const PLAN_LINES: usize = 40;

/// Column headers of the stats table.
const STATS_COLUMNS: [&str; 10] =
    ["shards", "conns", "requests", "frames", "forwarded", "placed", "rejected", "live_orders", "gmv_cents", "log_bytes"];

/// The name of an order state, as in the protocol docs.
#[must_use]
pub const fn state_name(state: OrderState) -> &'static str {
    match state {
        OrderState::Placed => "placed",
        OrderState::Paid => "paid",
        OrderState::Cancelled => "cancelled",
        OrderState::Expired => "expired",
    }
}

/// Cents as currency units: `1999` -> `19.99`.
#[must_use]
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Milliseconds since the Unix epoch as UTC, `2024-05-01T12:00:00.123Z`.
#[must_use]
pub fn utc(ms: u64) -> String {
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    // Howard Hinnant's civil_from_days, on unsigned days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Write `value` as pretty-printed JSON and a newline.
fn json(out: &mut impl Write, value: &impl Serialize) -> Result<(), AdminError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Write the catalogue `products` as CSV (the columns of
/// `load-catalogue`, `stock` = supplied, then available, reserved, paid) or
/// as a JSON array of stock views.
pub fn catalogue(out: &mut impl Write, products: &[StockInfo], as_json: bool) -> Result<(), AdminError> {
    if as_json {
        return json(out, &products.iter().map(StockView::from).collect::<Vec<_>>());
    }
    writeln!(out, "{},available,reserved,paid", crate::admin::catalogue_file::HEADER)?;
    for p in products {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            p.product, p.unit_price_cents, p.supplied, p.per_user_limit, p.payment_window_ms, p.available, p.reserved, p.paid
        )?;
    }
    Ok(())
}

/// Write what `orderd admin checkpoint` got: each core's checkpoint sequence.
pub fn checkpointed(out: &mut impl Write, taken: &orderd_protocol::message::Checkpointed, as_json: bool) -> Result<(), AdminError> {
    if as_json {
        #[derive(Serialize)]
        struct View {
            /// By core, as decimal strings (u64s survive JavaScript).
            sequences: Vec<String>,
        }
        return json(out, &View { sequences: taken.sequences.iter().map(ToString::to_string).collect() });
    }
    writeln!(out, "checkpoint durable on {} cores; a restart replays each core's log from:", taken.sequences.len())?;
    for (core, sequence) in taken.sequences.iter().enumerate() {
        writeln!(out, "  core {core}: sequence {sequence}")?;
    }
    Ok(())
}

/// Write a product's stock.
pub fn stock(out: &mut impl Write, s: &StockInfo, as_json: bool) -> Result<(), AdminError> {
    if as_json {
        return json(out, &StockView::from(s));
    }
    let limit = match s.per_user_limit {
        0 => "no per-user limit".to_owned(),
        n => format!("limit {n} per user"),
    };
    let window = match s.payment_window_ms {
        0 => "orders never expire".to_owned(),
        ms => format!("payment window {ms} ms"),
    };
    writeln!(
        out,
        "product {}: {} available, {} reserved, {} paid, {} supplied; price {} ({} cents); {limit}; {window}",
        s.product,
        s.available,
        s.reserved,
        s.paid,
        s.supplied,
        money(s.unit_price_cents),
        s.unit_price_cents
    )?;
    Ok(())
}

/// Write an order.
pub fn order(out: &mut impl Write, o: &Order, as_json: bool) -> Result<(), AdminError> {
    let view = OrderView::from(o);
    if as_json {
        return json(out, &view);
    }
    let expires = view.expires_ms.map_or_else(|| "never expires".to_owned(), |ms| format!("expires {}", utc(ms)));
    writeln!(
        out,
        "order {}: {} — user {}, product {}, {} x {} = {} ({} cents); created {}, {expires}; key {}",
        view.id,
        view.state,
        view.user,
        view.product,
        view.qty,
        money(view.unit_price_cents),
        money(view.amount_cents),
        view.amount_cents,
        utc(view.created_ms),
        view.key
    )?;
    Ok(())
}

/// Write server statistics: a table with a row per core and a total,
/// then (from a server of protocol version 2) the storage tables.
pub fn stats(
    out: &mut impl Write,
    server: &str,
    s: &Stats,
    storage: Option<&orderd_protocol::message::StorageStats>,
    as_json: bool,
) -> Result<(), AdminError> {
    let mut view = StatsView::from(s);
    view.storage = storage.map(super::storage::StorageView::from);
    if as_json {
        return json(out, &view);
    }
    writeln!(out, "orderd at {server}: server id {}, {} cores", view.server_id, view.cores.len())?;
    let mut rows: Vec<(String, [u64; 10])> =
        view.cores.iter().map(|c| (c.core.map_or_else(String::new, |n| n.to_string()), c.cells())).collect();
    rows.push(("total".to_owned(), view.totals.cells()));
    let mut widths = STATS_COLUMNS.map(str::len);
    for (_, cells) in &rows {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.to_string().len());
        }
    }
    write!(out, "{:<5}", "core")?;
    for (name, w) in STATS_COLUMNS.iter().zip(widths) {
        write!(out, "  {name:>w$}")?;
    }
    writeln!(out)?;
    for (label, cells) in &rows {
        write!(out, "{label:<5}")?;
        for (cell, w) in cells.iter().zip(widths) {
            write!(out, "  {cell:>w$}")?;
        }
        writeln!(out)?;
    }
    match &view.storage {
        Some(storage) => super::storage::write(out, storage),
        None => Ok(()),
    }
}

/// Write the result of a load.
pub fn loaded(out: &mut impl Write, server: &str, source: &str, report: &LoadReport, plan: &Plan, as_json: bool) -> Result<(), AdminError> {
    let elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX);
    if as_json {
        let view = LoadView {
            source,
            loaded: report.loaded,
            elapsed_ms,
            new: plan.new,
            updated: plan.updated,
            unchanged: plan.unchanged,
            stock_kept: plan.stock_kept,
            stock_adjusted: plan.stock_adjusted,
        };
        return json(out, &view);
    }
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { format!(", {:.0} products/s", report.loaded as f64 / secs) } else { String::new() };
    writeln!(out, "loaded {} products ({source}) into orderd at {server} in {secs:.3} s{rate}", report.loaded)?;
    summary(out, plan)
}

/// The counts of a plan, and what an operator may want to do about kept stock.
fn summary(out: &mut impl Write, plan: &Plan) -> Result<(), AdminError> {
    writeln!(out, "  {} new, {} updated, {} unchanged", plan.new, plan.updated, plan.unchanged)?;
    if plan.stock_adjusted > 0 {
        writeln!(out, "  stock of {} existing products adjusted to the file's totals (--set-stock)", plan.stock_adjusted)?;
    }
    if plan.stock_kept > 0 {
        writeln!(
            out,
            "  stock of {} existing products differs from the file and was kept: an upsert never moves stock; \
             use --set-stock to make the file's stock the total supplied, or `orderd admin adjust-stock PRODUCT DELTA`",
            plan.stock_kept
        )?;
    }
    Ok(())
}

/// Writes what a load of `source` would change (`--dry-run`).
///
/// # Errors
/// The output cannot be written.
pub fn plan(out: &mut impl Write, server: &str, source: &str, plan: &Plan, as_json: bool) -> Result<(), AdminError> {
    if as_json {
        return json(out, &PlanView { source, dry_run: true, plan });
    }
    writeln!(out, "dry run: loading {source} into orderd at {server} would change (nothing was sent):")?;
    summary(out, plan)?;
    let notable: Vec<&Change> = plan.changes.iter().filter(|c| c.is_notable()).collect();
    for change in notable.iter().take(PLAN_LINES) {
        match change {
            Change::New { product, stock } => writeln!(out, "  new      product {product}: {stock} units")?,
            Change::Update { product, settings, supplied, available, file_stock, stock_delta } => {
                let mut parts: Vec<String> = settings.iter().map(|(name, now, file)| format!("{name} {now} -> {file}")).collect();
                if *stock_delta != 0 {
                    parts.push(format!(
                        "stock {stock_delta:+} (supplied {supplied} -> {file_stock}, available {available} -> {})",
                        available.saturating_add_signed(*stock_delta)
                    ));
                } else if supplied != file_stock {
                    parts.push(format!("stock kept: {available} available of {supplied} supplied (the file says {file_stock})"));
                }
                writeln!(out, "  update   product {product}: {}", parts.join(", "))?;
            }
            Change::Unchanged { .. } => {}
        }
    }
    if notable.len() > PLAN_LINES {
        writeln!(out, "  ... and {} more (--json lists every product)", notable.len() - PLAN_LINES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_print_as_currency_units() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(1999), "19.99");
        assert_eq!(money(100_000), "1000.00");
    }

    #[test]
    fn epoch_milliseconds_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn stats_totals_sum_every_core() {
        let core = |core, requests| CoreStats { core, requests, shards: 4, gmv_cents: u64::MAX, ..CoreStats::default() };
        let view = StatsView::from(&Stats { server_id: 1, cores: vec![core(0, 10), core(1, 32)] });
        assert_eq!(view.totals.requests, 42);
        assert_eq!(view.totals.shards, 8);
        assert_eq!(view.totals.gmv_cents, u64::MAX, "saturates rather than wraps");
        assert_eq!(view.totals.core, None);
    }
}
