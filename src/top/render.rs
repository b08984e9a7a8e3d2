//! The view, a pure function of a [`TopState`]: a header (server, cores,
//! time, connection), the windows table, the totals, the orders/s
//! sparkline, the best sellers and the sold-out list. Money is shown in
//! currency units with two decimals; quantities and money have their
//! thousands grouped (`1,234,567.89`), ids do not.

use orderd_protocol::message::{Aggregates, WindowTotals};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use super::state::{Link, Snapshot, TopState};
use crate::admin::render::utc;

/// Draw `state` over the whole frame.
pub fn render(frame: &mut Frame<'_>, state: &TopState) {
    let [header, middle, spark, bottom] =
        Layout::vertical([Constraint::Length(5), Constraint::Length(7), Constraint::Length(8), Constraint::Min(4)]).areas(frame.area());
    let [windows, totals] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(middle);
    let [top, sold_out] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    let latest = state.latest.as_ref();
    render_header(frame, header, state);
    render_windows(frame, windows, latest.map(|s| &s.aggregates));
    render_totals(frame, totals, latest.map(|s| &s.aggregates));
    render_sparkline(frame, spark, state);
    render_top(frame, top, state.top, latest.map(|s| &s.aggregates));
    render_sold_out(frame, sold_out, latest.map(|s| &s.aggregates));
}

fn titled(title: String) -> Block<'static> {
    Block::bordered().title(Span::styled(format!(" {title} "), Style::new().add_modifier(Modifier::BOLD)))
}

fn label(text: &str) -> Span<'static> {
    Span::styled(text.to_owned(), Style::new().fg(Color::DarkGray))
}

fn render_header(frame: &mut Frame<'_>, area: Rect, state: &TopState) {
    let mut facts = vec![label("server "), Span::raw(state.server.clone())];
    if let Some(Snapshot { server_id, cores, connections, aggregates }) = &state.latest {
        facts.extend([
            label("  id "),
            Span::raw(server_id.to_string()),
            label("  cores "),
            Span::raw(cores.to_string()),
            label("  connections "),
            Span::raw(connections.to_string()),
            label("  server time "),
            Span::raw(utc(aggregates.now_ms)),
        ]);
    }
    let every = format!("{:.1} s", state.interval.as_secs_f64());
    let status = match &state.link {
        Link::Connecting => Line::from(vec![label("status "), Span::raw(format!("connecting... (polling every {every})")).yellow()]),
        Link::Connected => Line::from(vec![label("status "), Span::raw(format!("connected, refreshed every {every}")).green()]),
        Link::Failing { error, failures } => {
            let stale = if state.latest.is_some() { "; the figures below are the last received" } else { "" };
            Line::from(vec![
                label("status "),
                Span::raw(format!("ERROR ({failures} failed polls, retrying every {every}{stale}): {error}")).red().bold(),
            ])
        }
    };
    let lines = vec![Line::from(facts), status];
    let block = titled("orderd top".into()).title_bottom(Line::from(" q, Esc or Ctrl-C: quit ").right_aligned());
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(block), area);
}

/// `n` with its thousands grouped: `1234567` -> `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Cents as grouped currency units: `123456789` -> `1,234,567.89`.
fn money(cents: u64) -> String {
    format!("{}.{:02}", grouped(cents / 100), cents % 100)
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

/// `count / seconds` with one decimal.
fn per_second(count: u64, seconds: u32) -> String {
    let whole = count / u64::from(seconds.max(1));
    let tenths = count % u64::from(seconds.max(1)) * 10 / u64::from(seconds.max(1));
    format!("{}.{tenths}", grouped(whole))
}

/// Which of a table's columns fit `area` whole, and their widths: each
/// column as wide as its widest text (header included), the columns with
/// the highest `drop_rank` left out first until the rest fit inside the
/// borders. A number is never cut: a column goes instead (issue 23: at
/// 80x24 a GMV lost its leading digits).
fn fit(area: Rect, texts: &[Vec<String>], drop_rank: &[u8]) -> Vec<(usize, u16)> {
    let widths: Vec<u16> = (0..drop_rank.len())
        .map(|c| texts.iter().filter_map(|row| row.get(c)).map(|t| t.chars().count()).max().unwrap_or(0) as u16)
        .collect();
    let inside = area.width.saturating_sub(2);
    let mut kept: Vec<usize> = (0..drop_rank.len()).collect();
    // One space between columns (the table's default spacing).
    let total = |kept: &[usize]| kept.iter().map(|&c| widths[c]).sum::<u16>() + kept.len().saturating_sub(1) as u16;
    while total(&kept) > inside && kept.len() > 1 {
        let Some(worst) = kept.iter().copied().max_by_key(|&c| (drop_rank[c], c)) else { break };
        kept.retain(|&c| c != worst);
    }
    kept.into_iter().map(|c| (c, widths[c])).collect()
}

/// A table of right-aligned `texts` (the first row the header) with the
/// columns [`fit`] keeps.
fn fitted_table(area: Rect, texts: Vec<Vec<String>>, drop_rank: &[u8], title: String) -> Table<'static> {
    let kept = fit(area, &texts, drop_rank);
    let widths: Vec<Constraint> = kept.iter().map(|&(_, w)| Constraint::Length(w)).collect();
    let mut rows = texts
        .into_iter()
        .map(|row| Row::new(kept.iter().map(|&(c, _)| right(row.get(c).cloned().unwrap_or_default())).collect::<Vec<_>>()));
    let header = rows.next().unwrap_or_default().style(Style::new().add_modifier(Modifier::BOLD));
    Table::new(rows.collect::<Vec<_>>(), widths).header(header).block(titled(title))
}

fn render_windows(frame: &mut Frame<'_>, area: Rect, aggregates: Option<&Aggregates>) {
    let mut texts = vec![["window", "orders", "orders/s", "GMV", "GMV/s"].map(str::to_owned).to_vec()];
    texts.extend(aggregates.map(|a| a.windows.as_slice()).unwrap_or_default().iter().map(
        |&WindowTotals { orders, gmv_cents, seconds }| {
            vec![
                format!("{seconds} s"),
                grouped(orders),
                per_second(orders, seconds),
                money(gmv_cents),
                money(gmv_cents / u64::from(seconds.max(1))),
            ]
        },
    ));
    // Dropped first: orders/s, then GMV/s, then orders.
    let table = fitted_table(area, texts, &[0, 2, 4, 1, 3], "sliding windows (the current second is partial)".into());
    frame.render_widget(table, area);
}

fn render_totals(frame: &mut Frame<'_>, area: Rect, aggregates: Option<&Aggregates>) {
    let values: [(&str, String); 5] = match aggregates {
        Some(a) => [
            ("orders placed", grouped(a.orders_placed)),
            ("GMV", money(a.gmv_cents)),
            ("units sold", grouped(a.units_sold)),
            ("products", grouped(a.products)),
            ("sold out", grouped(a.sold_out_count)),
        ],
        None => [("orders placed", "-"), ("GMV", "-"), ("units sold", "-"), ("products", "-"), ("sold out", "-")]
            .map(|(l, v)| (l, v.to_owned())),
    };
    let rows = values.clone().map(|(l, v)| Row::new([Cell::from(label(l)), right(v)]));
    // The value column as wide as its widest value: a number is never cut.
    let value_width = values.iter().map(|(_, v)| v.chars().count()).max().unwrap_or(0) as u16;
    let table = Table::new(rows, [Constraint::Fill(1), Constraint::Length(value_width)]).block(titled("totals since start".into()));
    frame.render_widget(table, area);
}

fn render_sparkline(frame: &mut Frame<'_>, area: Rect, state: &TopState) {
    let width = usize::from(area.width.saturating_sub(2));
    let shown: Vec<u64> = state.history().rev().take(width).rev().collect();
    let title = match (shown.last(), shown.iter().max()) {
        (Some(&now), Some(&peak)) => {
            let seconds = (state.interval.as_millis() * shown.len() as u128).div_ceil(1000);
            format!("orders/s, last {seconds} s: now {}, peak {}", grouped(now), grouped(peak))
        }
        _ => "orders/s: from the second answer on".to_owned(),
    };
    frame.render_widget(Sparkline::default().data(&shown).style(Style::new().fg(Color::Green)).block(titled(title)), area);
}

fn render_top(frame: &mut Frame<'_>, area: Rect, top: u32, aggregates: Option<&Aggregates>) {
    let mut texts = vec![["#", "product", "units sold", "available"].map(str::to_owned).to_vec()];
    texts.extend(aggregates.map(|a| a.top.as_slice()).unwrap_or_default().iter().enumerate().map(|(rank, p)| {
        let available = if p.available == 0 { "sold out".to_owned() } else { grouped(p.available) };
        vec![(rank + 1).to_string(), p.product.to_string(), grouped(p.units_sold), available]
    }));
    // Dropped first: available, then the rank.
    let table = fitted_table(area, texts, &[2, 0, 1, 3], format!("top {top} products by units sold"));
    frame.render_widget(table, area);
}

fn render_sold_out(frame: &mut Frame<'_>, area: Rect, aggregates: Option<&Aggregates>) {
    let (title, text) = match aggregates {
        None => ("sold-out products".to_owned(), String::new()),
        Some(a) if a.sold_out_count == 0 => ("sold-out products: none".to_owned(), String::new()),
        Some(a) => {
            let mut text = a.sold_out.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            let unlisted = a.sold_out_count.saturating_sub(a.sold_out.len() as u64);
            if unlisted > 0 {
                text.push_str(&format!(" and {unlisted} more"));
            }
            (format!("sold-out products: {}", grouped(a.sold_out_count)), text)
        }
    };
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(titled(title)), area);
}

#[cfg(test)]
mod tests {
    use orderd_protocol::message::ProductSales;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;

    /// The rendered text of `state` on a `width` x `height` screen, one
    /// string per row.
    fn screen(state: &TopState, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, state)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>()).collect()
    }

    fn known() -> Snapshot {
        Snapshot {
            aggregates: Aggregates {
                now_ms: 1_700_000_000_000,
                windows: vec![
                    WindowTotals { orders: 7, gmv_cents: 12_345, seconds: 1 },
                    WindowTotals { orders: 65, gmv_cents: 99_999, seconds: 10 },
                    WindowTotals { orders: 600, gmv_cents: 600_000, seconds: 60 },
                ],
                top: vec![
                    ProductSales { product: 42, units_sold: 900, available: 0 },
                    ProductSales { product: 7, units_sold: 310, available: 90 },
                ],
                sold_out: vec![42, 43],
                sold_out_count: 3,
                products: 1000,
                units_sold: 1234,
                orders_placed: 4321,
                gmv_cents: 98_765_432,
            },
            server_id: 77,
            cores: 2,
            connections: 5,
        }
    }

    #[test]
    fn a_known_snapshot_shows_its_numbers() {
        let mut state = TopState::new("127.0.0.1:7070", std::time::Duration::from_secs(1), 10);
        let mut older = known();
        older.aggregates.now_ms -= 2000;
        older.aggregates.orders_placed -= 600;
        state.apply(Ok(older));
        state.apply(Ok(known()));
        let rows = screen(&state, 120, 40);
        let text = rows.join("\n");
        for expected in [
            "server 127.0.0.1:7070",
            "id 77",
            "cores 2",
            "connections 5",
            "server time 2023-11-14T22:13:20.000Z",
            "connected",
            // the sparkline's latest sample: 600 orders over 2 s
            "last 1 s: now 300, peak 300",
            "sold-out products: 3",
            "42, 43 and 1 more",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        // windows: orders, orders/s, GMV, GMV/s
        assert!(row_with(&rows, &["1", "s", "7", "7.0", "123.45", "123.45"]).is_some(), "1 s window:\n{text}");
        assert!(row_with(&rows, &["10", "s", "65", "6.5", "999.99", "99.99"]).is_some(), "10 s window:\n{text}");
        assert!(row_with(&rows, &["60", "s", "600", "10.0", "6,000.00", "100.00"]).is_some(), "60 s window:\n{text}");
        for run in [
            &["orders", "placed", "4,321"][..],
            &["GMV", "987,654.32"],
            &["units", "sold", "1,234"],
            &["products", "1,000"],
            &["sold", "out", "3"],
        ] {
            assert!(row_with(&rows, run).is_some(), "totals {run:?}:\n{text}");
        }
        // best sellers in order, the sold-out one marked
        let first = row_with(&rows, &["1", "42", "900", "sold", "out"]).unwrap_or_else(|| panic!("best seller:\n{text}"));
        assert_eq!(row_with(&rows, &["2", "7", "310", "90"]), Some(first + 1), "second best seller:\n{text}");
    }

    #[test]
    fn an_unreachable_server_is_shown_with_the_last_figures() {
        let mut state = TopState::new("127.0.0.1:7070", std::time::Duration::from_secs(1), 10);
        let text = screen(&state, 120, 40).join("\n");
        assert!(text.contains("connecting..."), "{text}");
        state.apply(Ok(known()));
        state.apply(Err("cannot reach orderd at 127.0.0.1:7070: connection refused".into()));
        let text = screen(&state, 120, 40).join("\n");
        assert!(text.contains("ERROR (1 failed polls"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains("4,321"), "the last figures stay: {text}");
    }

    #[test]
    fn a_small_terminal_does_not_panic() {
        let mut state = TopState::new("127.0.0.1:7070", std::time::Duration::from_secs(1), 10);
        state.apply(Ok(known()));
        for (w, h) in [(1, 1), (10, 5), (40, 12), (80, 24)] {
            let _ = screen(&state, w, h);
        }
    }

    #[test]
    fn at_80_by_24_numbers_are_never_cut_columns_go_instead() {
        let mut state = TopState::new("127.0.0.1:7070", std::time::Duration::from_secs(1), 10);
        let mut big = known();
        big.aggregates.windows = vec![
            WindowTotals { orders: 912_345, gmv_cents: 121_104_671, seconds: 1 },
            WindowTotals { orders: 9_123_456, gmv_cents: 1_211_046_717, seconds: 10 },
            WindowTotals { orders: 54_321_987, gmv_cents: 121_104_671_799, seconds: 60 },
        ];
        big.aggregates.gmv_cents = 98_765_432_109_876;
        big.aggregates.top = vec![ProductSales { product: 16_044_073_672_507_393, units_sold: 123_456_789, available: 987_654_321 }];
        state.apply(Ok(big));
        let rows = screen(&state, 80, 24);
        let text = rows.join("\n");
        for whole in ["12,110,467.17", "1,211,046,717.99", "987,654,321,098.76", "16044073672507393", "123,456,789"] {
            assert!(text.contains(whole), "{whole} cut or missing at 80x24:\n{text}");
        }
    }

    #[test]
    fn numbers_group_their_thousands() {
        assert_eq!([0, 999, 1000, 12_345, 1_234_567].map(grouped), ["0", "999", "1,000", "12,345", "1,234,567"]);
        assert_eq!(money(123_456_789), "1,234,567.89");
        assert_eq!(money(5), "0.05");
        assert_eq!(per_second(123_456, 10), "12,345.6");
    }

    /// The index of the first row whose words contain `run` in a row.
    fn row_with(rows: &[String], run: &[&str]) -> Option<usize> {
        rows.iter().position(|row| {
            let words: Vec<&str> = row.split(|c: char| c.is_whitespace() || "│┌┐└┘─".contains(c)).filter(|w| !w.is_empty()).collect();
            words.windows(run.len()).any(|w| w == run)
        })
    }
}
