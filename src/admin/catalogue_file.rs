//! The catalogue file of `orderd admin load-catalogue FILE`: CSV with a
//! header, read with the `csv` crate, validated row by row, with errors
//! that name the line.
//!
//! # Format
//!
//! ```text
//! # Spring sale. Prices in cents; stock in units.
//! product,name,unit_price_cents,stock,per_user_limit,payment_window_ms
//! 1,"Socks, wool",1999,5000,0,0
//! 2,Kettle,  4500, 100, 1, 900000
//! ```
//!
//! - CSV (RFC 4180): fields separated by commas, optionally quoted (`"..."`,
//!   with `""` for a quote inside), UTF-8; spaces around a field are
//!   ignored; a leading byte-order mark is ignored; `\n` or `\r\n`.
//! - Blank lines and lines starting with `#` are comments, anywhere in the
//!   file. There are no trailing comments.
//! - The first other line is the header. It names the columns, in any
//!   order: `product`, `unit_price_cents` and `stock` are required,
//!   `per_user_limit` and `payment_window_ms` optional (`0` when absent);
//!   any other column (a name, a SKU) is ignored. Each of these names at
//!   most once.
//! - Every row has exactly the header's number of fields, and every field
//!   of the columns above is a non-negative decimal integer:
//!
//! | field | range | meaning |
//! |---|---|---|
//! | `product` | `1..=2^64-1` | product id; each id at most once per file |
//! | `unit_price_cents` | `1..=MAX_UNIT_PRICE_CENTS` (1,000,000,000) | catalogue price |
//! | `stock` | `0..=2^64-1` | a new product's units for sale (an existing product keeps its stock unless `--set-stock`) |
//! | `per_user_limit` | `0..=2^32-1` | units one user may hold; `0`: no limit |
//! | `payment_window_ms` | `0..=2^64-1` | unpaid orders expire after it; `0`: never |
//!
//! - At least one product, at most [`MAX_PRODUCTS`].
//!
//! Loading the same file twice leaves the same catalogue.

use std::collections::HashMap;
use std::io::Read;

use orderd_protocol::limits::MAX_UNIT_PRICE_CENTS;
use orderd_protocol::UpsertProduct;

/// The header of a file with every column, in the documented order.
pub const HEADER: &str = "product,unit_price_cents,stock,per_user_limit,payment_window_ms";

/// The columns read, in [`HEADER`] order; the first three are required.
pub const FIELDS: [&str; 5] = ["product", "unit_price_cents", "stock", "per_user_limit", "payment_window_ms"];

/// How many of [`FIELDS`] a header must name.
const REQUIRED: usize = 3;

/// Most products one file may hold: a bound on the memory a mistaken file
/// (a log, a dump) can make the command take, far above any real catalogue.
pub const MAX_PRODUCTS: usize = 10_000_000;

/// Why a catalogue file was refused, and on which line (1-based).
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct CatalogueError {
    /// The line, counting from 1 (`0`: the file as a whole).
    pub line: usize,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a line of a catalogue file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be read (not UTF-8, I/O error, a broken quote).
    #[error("cannot read: {0}")]
    Read(String),
    /// The header lacks a required column.
    #[error("the header `{found}` has no `{column}` column (required: product, unit_price_cents, stock)")]
    MissingColumn {
        /// The column.
        column: &'static str,
        /// The header found.
        found: String,
    },
    /// The header names a column twice.
    #[error("the header names `{column}` twice")]
    DuplicateColumn {
        /// The column.
        column: String,
    },
    /// The file has no header at all.
    #[error("the file is empty: expected a header such as `{HEADER}` and at least one product")]
    NoHeader,
    /// The file has a header but no product.
    #[error("the file has a header but no products")]
    NoProducts,
    /// A row has another number of fields than the header.
    #[error("expected {expected} comma-separated fields as in the header, found {found}")]
    FieldCount {
        /// Fields found.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A field is not a non-negative whole number.
    #[error("{field} `{value}` is not a whole number (digits only, no sign, decimal point or unit)")]
    NotANumber {
        /// The field's name.
        field: &'static str,
        /// What the file holds.
        value: String,
    },
    /// A field is a number outside its range.
    #[error("{field} {value} is out of range: allowed {range}")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// What the file holds.
        value: String,
        /// The allowed range, in words.
        range: &'static str,
    },
    /// A product appears twice.
    #[error("product {product} is already on line {first_line}; each product may appear once")]
    Duplicate {
        /// The product.
        product: u64,
        /// Where it first appeared.
        first_line: usize,
    },
    /// The file holds more than [`MAX_PRODUCTS`] products.
    #[error("more than {MAX_PRODUCTS} products; split the file")]
    TooManyProducts,
}

/// Where each of [`FIELDS`] is in a row (`None`: an optional column absent).
struct Columns {
    at: [Option<usize>; 5],
    width: usize,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Columns, Problem> {
        let mut at = [None; 5];
        let mut twice = None;
        for (i, name) in header.iter().enumerate() {
            if let Some(field) = FIELDS.iter().position(|&f| f == name) {
                if at[field].replace(i).is_some() {
                    twice.get_or_insert(FIELDS[field]);
                }
            }
        }
        if let Some(missing) = (0..REQUIRED).find(|&f| at[f].is_none()) {
            let found = header.iter().collect::<Vec<_>>().join(",");
            return Err(Problem::MissingColumn { column: FIELDS[missing], found });
        }
        if let Some(column) = twice {
            return Err(Problem::DuplicateColumn { column: column.to_owned() });
        }
        Ok(Columns { at, width: header.len() })
    }

    /// Field `field` of `row`, `"0"` for an absent optional column.
    fn get<'r>(&self, row: &'r csv::StringRecord, field: usize) -> &'r str {
        self.at[field].and_then(|i| row.get(i)).unwrap_or("0")
    }
}

/// Parse a whole catalogue file.
///
/// # Errors
/// The first line that is wrong, with what is wrong with it.
pub fn parse(mut input: impl Read) -> Result<Vec<UpsertProduct>, CatalogueError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| CatalogueError { line: 0, problem: Problem::Read(e.to_string()) })?;
    // Comments and blank lines go before the CSV reader sees the text, so
    // that its line numbers can be mapped back to the file's.
    let (text, lines) = data_lines(&bytes);
    let file_line = |csv_line: u64| lines.get((csv_line as usize).saturating_sub(1)).copied().unwrap_or(lines.last().map_or(1, |l| l + 1));
    let mut reader = csv::ReaderBuilder::new().has_headers(false).trim(csv::Trim::All).flexible(true).from_reader(&text[..]);
    let mut products = Vec::new();
    let mut first_line: HashMap<u64, usize> = HashMap::new();
    let mut columns: Option<Columns> = None;
    let mut row = csv::StringRecord::new();
    loop {
        let more = reader.read_record(&mut row).map_err(|e| {
            let line = e.position().map_or(0, |p| file_line(p.line()));
            CatalogueError { line, problem: Problem::Read(read_problem(&e)) }
        })?;
        if !more {
            break;
        }
        let line = row.position().map_or(0, |p| file_line(p.line()));
        let at = |problem| CatalogueError { line, problem };
        let Some(cols) = &columns else {
            columns = Some(Columns::from_header(&row).map_err(at)?);
            continue;
        };
        if row.len() != cols.width {
            return Err(at(Problem::FieldCount { found: row.len(), expected: cols.width }));
        }
        let upsert = parse_row(cols, &row).map_err(at)?;
        if let Some(first) = first_line.insert(upsert.product, line) {
            return Err(at(Problem::Duplicate { product: upsert.product, first_line: first }));
        }
        if products.len() == MAX_PRODUCTS {
            return Err(at(Problem::TooManyProducts));
        }
        products.push(upsert);
    }
    let end = bytes.split(|&b| b == b'\n').count().saturating_sub(usize::from(bytes.ends_with(b"\n"))).max(1);
    if columns.is_none() {
        return Err(CatalogueError { line: end, problem: Problem::NoHeader });
    }
    if products.is_empty() {
        return Err(CatalogueError { line: end, problem: Problem::NoProducts });
    }
    Ok(products)
}

/// The file's lines that are neither blank nor comments (a leading
/// byte-order mark dropped), and the file line number of each.
fn data_lines(bytes: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let (mut text, mut lines) = (Vec::with_capacity(bytes.len()), Vec::new());
    for (index, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let content = line.trim_ascii();
        if content.is_empty() || content.starts_with(b"#") {
            continue;
        }
        text.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            text.push(b'\n');
        }
        lines.push(index + 1);
    }
    (text, lines)
}

/// What a reading error says, without the crate's position (the line is
/// given apart).
fn read_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "the line is not UTF-8 text".to_owned(),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

/// Parse one data row.
fn parse_row(cols: &Columns, row: &csv::StringRecord) -> Result<UpsertProduct, Problem> {
    let (product, price, stock, limit, window) = (cols.get(row, 0), cols.get(row, 1), cols.get(row, 2), cols.get(row, 3), cols.get(row, 4));
    let product = number(FIELDS[0], product)?;
    if product == 0 {
        return Err(Problem::OutOfRange { field: FIELDS[0], value: "0".into(), range: "1 or more" });
    }
    let unit_price_cents = number(FIELDS[1], price)?;
    if !(1..=MAX_UNIT_PRICE_CENTS).contains(&unit_price_cents) {
        return Err(Problem::OutOfRange { field: FIELDS[1], value: price.to_owned(), range: "1..=1000000000 cents" });
    }
    let stock = number(FIELDS[2], stock)?;
    let per_user_limit = u32::try_from(number(FIELDS[3], limit)?).map_err(|_| Problem::OutOfRange {
        field: FIELDS[3],
        value: limit.to_owned(),
        range: "0..=4294967295 units (0: no limit)",
    })?;
    let payment_window_ms = number(FIELDS[4], window)?;
    Ok(UpsertProduct { product, unit_price_cents, stock, payment_window_ms, per_user_limit })
}

/// A `u64` field: digits only.
fn number(field: &'static str, value: &str) -> Result<u64, Problem> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::NotANumber { field, value: value.to_owned() });
    }
    value.parse().map_err(|_| Problem::OutOfRange { field, value: value.to_owned(), range: "0..=18446744073709551615" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Vec<UpsertProduct>, CatalogueError> {
        parse(s.as_bytes())
    }

    /// The line and problem of a refused file.
    fn refusal(s: &str) -> (usize, Problem) {
        match parse_str(s) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => (e.line, e.problem),
        }
    }

    const GOOD: &str = "\u{feff}# Spring sale\n\
        \n\
        product,unit_price_cents,stock,per_user_limit,payment_window_ms\r\n\
        1,1999,5000,0,0\r\n\
        # the hot one\n\
        \x20 2 ,  4500, 100 , 1, 900000  \n\
        \n\
        18446744073709551615,1000000000,18446744073709551615,4294967295,18446744073709551615\n";

    #[test]
    fn a_good_file_with_comments_blank_lines_spaces_crlf_and_bom_parses() {
        let products = parse_str(GOOD).unwrap();
        assert_eq!(
            products,
            vec![
                UpsertProduct { product: 1, unit_price_cents: 1999, stock: 5000, payment_window_ms: 0, per_user_limit: 0 },
                UpsertProduct { product: 2, unit_price_cents: 4500, stock: 100, payment_window_ms: 900_000, per_user_limit: 1 },
                UpsertProduct {
                    product: u64::MAX,
                    unit_price_cents: MAX_UNIT_PRICE_CENTS,
                    stock: u64::MAX,
                    payment_window_ms: u64::MAX,
                    per_user_limit: u32::MAX
                },
            ]
        );
    }

    #[test]
    fn the_header_may_have_spaces_around_its_names() {
        let products = parse_str("product , unit_price_cents,stock ,per_user_limit, payment_window_ms\n5,1,0,0,0\n").unwrap();
        assert_eq!(products.len(), 1);
    }

    #[test]
    fn a_missing_or_wrong_header_is_refused_on_its_line() {
        let (line, p) = refusal("# c\n1,1999,5000,0,0\n");
        assert_eq!(line, 2);
        assert!(matches!(p, Problem::MissingColumn { column: "product", ref found } if found == "1,1999,5000,0,0"), "{p}");
        let (line, p) = refusal("product,price,stock,per_user_limit,payment_window_ms\n");
        assert_eq!(line, 1);
        assert!(matches!(p, Problem::MissingColumn { column: "unit_price_cents", .. }), "{p}");
        let (_, p) = refusal("product,stock,stock,unit_price_cents\n1,2,3,4\n");
        assert!(matches!(p, Problem::DuplicateColumn { ref column } if column == "stock"), "{p}");
    }

    #[test]
    fn columns_in_any_order_extra_columns_and_quoted_fields_are_read() {
        let text = "name,stock,product,sku,unit_price_cents\n\"Socks, wool\",5000,1,A-1,\"1999\"\n\"Kettle \"\"XL\"\"\",7,2,,4500\n";
        assert_eq!(
            parse_str(text).unwrap(),
            vec![
                UpsertProduct { product: 1, unit_price_cents: 1999, stock: 5000, payment_window_ms: 0, per_user_limit: 0 },
                UpsertProduct { product: 2, unit_price_cents: 4500, stock: 7, payment_window_ms: 0, per_user_limit: 0 },
            ],
            "optional columns default to 0"
        );
    }

    #[test]
    fn an_empty_file_and_a_header_only_file_are_refused() {
        assert!(matches!(refusal(""), (1, Problem::NoHeader)));
        assert!(matches!(refusal("\n# nothing\n"), (2, Problem::NoHeader)));
        assert!(matches!(refusal(&format!("{HEADER}\n# later\n")), (2, Problem::NoProducts)));
    }

    #[test]
    fn a_row_with_too_few_or_too_many_fields_is_refused() {
        assert!(matches!(refusal(&format!("{HEADER}\n1,2,3,4\n")), (2, Problem::FieldCount { found: 4, expected: 5 })));
        assert!(matches!(refusal(&format!("{HEADER}\n1,2,3,0,0,\n")), (2, Problem::FieldCount { found: 6, expected: 5 })));
        assert!(matches!(refusal(&format!("{HEADER}\n1,2,3,0,0 # note\n")), (2, Problem::NotANumber { field: "payment_window_ms", .. })));
    }

    #[test]
    fn a_field_that_is_not_a_whole_number_is_refused_by_name() {
        let cases = [
            ("x,1,1,0,0", "product"),
            ("1,19.99,1,0,0", "unit_price_cents"),
            ("1,1,-5,0,0", "stock"),
            ("1,1,1,,0", "per_user_limit"),
            ("1,1,1,0,15m", "payment_window_ms"),
            ("1,+1,1,0,0", "unit_price_cents"),
            ("1,\"1 00\",1,0,0", "unit_price_cents"),
        ];
        for (row, name) in cases {
            let (line, p) = refusal(&format!("{HEADER}\n\n{row}\n"));
            assert_eq!(line, 3, "{row}");
            assert!(matches!(p, Problem::NotANumber { field, .. } if field == name), "{row}: {p}");
        }
    }

    #[test]
    fn a_field_out_of_its_range_is_refused_by_name() {
        let cases = [
            ("0,1,1,0,0", "product"),
            ("18446744073709551616,1,1,0,0", "product"),
            ("1,0,1,0,0", "unit_price_cents"),
            ("1,1000000001,1,0,0", "unit_price_cents"),
            ("1,1,18446744073709551616,0,0", "stock"),
            ("1,1,1,4294967296,0", "per_user_limit"),
            ("1,1,1,0,18446744073709551616", "payment_window_ms"),
        ];
        for (row, name) in cases {
            let (line, p) = refusal(&format!("{HEADER}\n1,1,1,0,0\n{row}\n"));
            assert_eq!(line, 3, "{row}");
            assert!(matches!(p, Problem::OutOfRange { field, .. } if field == name), "{row}: {p}");
        }
    }

    #[test]
    fn a_product_listed_twice_is_refused_with_both_lines() {
        let (line, p) = refusal(&format!("{HEADER}\n7,1,1,0,0\n8,1,1,0,0\n7,2,2,0,0\n"));
        assert_eq!(line, 4);
        assert!(matches!(p, Problem::Duplicate { product: 7, first_line: 2 }), "{p}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_on_their_line() {
        let mut bytes = format!("{HEADER}\n1,1,1,0,0\n").into_bytes();
        bytes.extend_from_slice(b"2,\xff,1,0,0\n");
        let e = parse(&bytes[..]).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(matches!(e.problem, Problem::Read(_)), "{e}");
    }

    #[test]
    fn errors_read_as_line_and_problem() {
        let e = parse_str(&format!("{HEADER}\n1,19.99,1,0,0\n")).unwrap_err();
        assert_eq!(e.to_string(), "line 2: unit_price_cents `19.99` is not a whole number (digits only, no sign, decimal point or unit)");
    }
}
