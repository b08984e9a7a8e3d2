//! The catalogue file of `orderd admin load-catalogue FILE`: parsing and
//! validation, line by line, with errors that name the line.
//!
//! # Format
//!
//! ```text
//! # Spring sale. Prices in cents; stock in units.
//! product,unit_price_cents,stock,per_user_limit,payment_window_ms
//! 1,1999,5000,0,0
//! 2,  4500, 100, 1, 900000
//! ```
//!
//! - UTF-8 text, one product per line, fields separated by commas. Spaces
//!   around a field are ignored; a leading byte-order mark is ignored.
//! - Blank lines and lines whose first non-blank character is `#` are
//!   comments, anywhere in the file. There are no trailing comments and no
//!   quoting (every field is a number).
//! - The first other line is the header, exactly
//!   `product,unit_price_cents,stock,per_user_limit,payment_window_ms`.
//! - Every field is a non-negative decimal integer:
//!
//! | field | range | meaning |
//! |---|---|---|
//! | `product` | `1..=2^64-1` | product id; each id at most once per file |
//! | `unit_price_cents` | `1..=MAX_UNIT_PRICE_CENTS` (1,000,000,000) | catalogue price |
//! | `stock` | `0..=2^64-1` | units available from now on |
//! | `per_user_limit` | `0..=2^32-1` | units one user may hold; `0`: no limit |
//! | `payment_window_ms` | `0..=2^64-1` | unpaid orders expire after it; `0`: never |
//!
//! - At least one product, at most [`MAX_PRODUCTS`].
//!
//! Loading sets every field of each product (an upsert), so loading the same
//! file twice leaves the same catalogue.

use std::collections::HashMap;
use std::io::BufRead;

use orderd_protocol::limits::MAX_UNIT_PRICE_CENTS;
use orderd_protocol::UpsertProduct;

/// The header line, exactly.
pub const HEADER: &str = "product,unit_price_cents,stock,per_user_limit,payment_window_ms";

/// The field names, in column order.
pub const FIELDS: [&str; 5] = ["product", "unit_price_cents", "stock", "per_user_limit", "payment_window_ms"];

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
    /// The file could not be read (not UTF-8, I/O error).
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The first line that is not blank or a comment is not the header.
    #[error("expected the header `{HEADER}`, found `{found}`")]
    Header {
        /// The line found.
        found: String,
    },
    /// The file has no header at all.
    #[error("the file is empty: expected the header `{HEADER}` and at least one product")]
    NoHeader,
    /// The file has a header but no product.
    #[error("the file has a header but no products")]
    NoProducts,
    /// A row has the wrong number of fields.
    #[error("expected 5 comma-separated fields ({HEADER}), found {found}")]
    FieldCount {
        /// Fields found.
        found: usize,
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

/// Parse a whole catalogue file.
///
/// # Errors
/// The first line that is wrong, with what is wrong with it.
pub fn parse(input: impl BufRead) -> Result<Vec<UpsertProduct>, CatalogueError> {
    let mut products = Vec::new();
    let mut first_line: HashMap<u64, usize> = HashMap::new();
    let mut header_seen = false;
    let mut last_line = 0;
    for (index, line) in input.lines().enumerate() {
        let line_no = index + 1;
        last_line = line_no;
        let at = |problem| CatalogueError { line: line_no, problem };
        let line = line.map_err(|e| at(Problem::Read(e)))?;
        let text = if index == 0 { line.trim_start_matches('\u{feff}') } else { line.as_str() }.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if !header_seen {
            if text.split(',').map(str::trim).ne(HEADER.split(',')) {
                return Err(at(Problem::Header { found: text.to_owned() }));
            }
            header_seen = true;
            continue;
        }
        let upsert = parse_row(text).map_err(at)?;
        if let Some(first) = first_line.insert(upsert.product, line_no) {
            return Err(at(Problem::Duplicate { product: upsert.product, first_line: first }));
        }
        if products.len() == MAX_PRODUCTS {
            return Err(at(Problem::TooManyProducts));
        }
        products.push(upsert);
    }
    if !header_seen {
        return Err(CatalogueError { line: last_line.max(1), problem: Problem::NoHeader });
    }
    if products.is_empty() {
        return Err(CatalogueError { line: last_line, problem: Problem::NoProducts });
    }
    Ok(products)
}

/// Parse one data row (already trimmed, not a comment).
fn parse_row(text: &str) -> Result<UpsertProduct, Problem> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let [product, price, stock, limit, window] = fields[..] else {
        return Err(Problem::FieldCount { found: fields.len() });
    };
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
        assert!(matches!(p, Problem::Header { ref found } if found == "1,1999,5000,0,0"), "{p}");
        let (line, p) = refusal("product,price,stock,per_user_limit,payment_window_ms\n");
        assert_eq!(line, 1);
        assert!(matches!(p, Problem::Header { .. }), "{p}");
        // Columns in another order are refused rather than misread.
        let (_, p) = refusal("product,stock,unit_price_cents,per_user_limit,payment_window_ms\n1,2,3,0,0\n");
        assert!(matches!(p, Problem::Header { .. }), "{p}");
    }

    #[test]
    fn an_empty_file_and_a_header_only_file_are_refused() {
        assert!(matches!(refusal(""), (1, Problem::NoHeader)));
        assert!(matches!(refusal("\n# nothing\n"), (2, Problem::NoHeader)));
        assert!(matches!(refusal(&format!("{HEADER}\n# later\n")), (2, Problem::NoProducts)));
    }

    #[test]
    fn a_row_with_too_few_or_too_many_fields_is_refused() {
        assert!(matches!(refusal(&format!("{HEADER}\n1,2,3,4\n")), (2, Problem::FieldCount { found: 4 })));
        assert!(matches!(refusal(&format!("{HEADER}\n1,2,3,0,0,\n")), (2, Problem::FieldCount { found: 6 })));
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
            ("1,\"100\",1,0,0", "unit_price_cents"),
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
