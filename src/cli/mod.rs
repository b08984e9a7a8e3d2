//! The command line: the clap tree of `orderd` (every flag also from an
//! `ORDERD_*` environment variable) and its validation: `orderd serve`'s
//! flags are checked once into the [`ServeConfig`](crate::config::ServeConfig)
//! the runtime trusts.
//!
//! - `src/bin/orderd.rs`: the tree of subcommands (`serve`, `admin`,
//!   `host-check`, `tail`, `top`), each command's flags living with it.
//! - [`site`]: where a server keeps its data and listens (the flags `serve`
//!   and `host-check` share) and `--cores` parsing.
//! - [`serve`]: the flags of `orderd serve` and their validation.
//! - [`config_file`]: `serve --config FILE` (TOML) and `--print-config`.

pub mod config_file;
pub mod serve;
pub mod site;

pub use serve::ServeArgs;
pub use site::{parse_cores, SiteArgs};
