//! `orderd admin shell`: the admin commands one line at a time, as
//! `redis-cli` is used, with line editing, history (`~/.orderd_history`) and
//! `help`.
//!
//! A line is split as a shell would split it (quotes, backslashes) and
//! parsed by the same clap tree as `orderd admin`, so every command, flag
//! and check is the same; `--json` may end any line. A failed command
//! prints its error and the shell goes on. Each command connects anew
//! (admin commands are rare; nothing is held open between them). Standard
//! input that is not a terminal is read line by line, so the shell also
//! runs scripts: `orderd admin shell < commands.txt`.

use std::io::Write;
use std::path::Path;

use clap::{CommandFactory, Parser};
use orderd_protocol::client::ClientConfig;
use rustyline::error::ReadlineError;
use rustyline::history::History;

use super::{run_with, AdminArgs, AdminCommand, AdminError};

/// The history file in the home directory (as redis-cli keeps
/// `~/.rediscli_history`).
pub const HISTORY_FILE: &str = ".orderd_history";

/// Lines of history kept.
const HISTORY_LINES: usize = 1000;

/// One shell line: an admin command and `--json`.
#[derive(Debug, Parser)]
#[command(name = "", no_binary_name = true, disable_version_flag = true, disable_help_subcommand = true)]
struct Line {
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

/// What the shell did with a line.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Go,
    Quit,
}

/// Runs the shell against `args.server`, reading lines from the terminal (or
/// standard input) until `quit`, `exit` or end of input, writing to `out`;
/// an interactive session's lines are kept in `history` (none: not kept).
///
/// # Errors
/// The terminal cannot be read or `out` cannot be written; a failed command
/// is printed, not returned.
pub fn run(args: &AdminArgs, history: Option<&Path>, config: ClientConfig, out: &mut impl Write) -> Result<(), AdminError> {
    let io = |e: ReadlineError| AdminError::Input(e.to_string());
    let mut editor = rustyline::DefaultEditor::new().map_err(io)?;
    if let Some(path) = history {
        let _ = editor.history_mut().set_max_len(HISTORY_LINES);
        let _ = editor.load_history(path);
    }
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if interactive {
        writeln!(out, "orderd admin shell on {}: `help` lists the commands, `quit` ends", args.server)?;
    }
    let prompt = if interactive { format!("orderd {}> ", args.server) } else { String::new() };
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(io(e)),
        };
        if !line.trim().is_empty() && interactive {
            let _ = editor.add_history_entry(line.as_str());
        }
        if one_line(&line, args, &config, out)? == Step::Quit {
            break;
        }
        out.flush()?;
    }
    if let (Some(path), true) = (history, interactive) {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs one line.
fn one_line(line: &str, args: &AdminArgs, config: &ClientConfig, out: &mut impl Write) -> Result<Step, AdminError> {
    let Some(words) = shlex::split(line) else {
        writeln!(out, "error: unbalanced quotes in: {line}")?;
        return Ok(Step::Go);
    };
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => return Ok(Step::Go),
        ["quit" | "exit"] => return Ok(Step::Quit),
        ["help"] | ["?"] => {
            write!(out, "{}", Line::command().render_long_help())?;
            writeln!(out, "\nAlso: help COMMAND, quit.")?;
            return Ok(Step::Go);
        }
        ["help", command] => {
            let mut tree = Line::command();
            match tree.find_subcommand_mut(command) {
                Some(sub) => write!(out, "{}", sub.render_long_help())?,
                None => writeln!(out, "error: no command `{command}`; `help` lists them")?,
            }
            return Ok(Step::Go);
        }
        _ => {}
    }
    let parsed = match Line::try_parse_from(&words) {
        Ok(parsed) => parsed,
        Err(e) => {
            // clap's own text: the problem and the usage.
            write!(out, "{}", e.render())?;
            return Ok(Step::Go);
        }
    };
    if matches!(parsed.command, AdminCommand::Shell { .. }) {
        writeln!(out, "already in the shell")?;
        return Ok(Step::Go);
    }
    let command = AdminArgs { server: args.server.clone(), json: args.json || parsed.json, command: parsed.command };
    let mut buffer = Vec::new();
    match run_with(&command, config.clone(), &mut buffer) {
        Ok(()) => out.write_all(&buffer)?,
        Err(e) => writeln!(out, "error: {e}")?,
    }
    Ok(Step::Go)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AdminArgs {
        // Nothing listens on port 1 of loopback: commands fail at once.
        AdminArgs { server: "127.0.0.1:1".into(), json: false, command: AdminCommand::Shell { history: None, home: None } }
    }

    fn line(text: &str) -> (Step, String) {
        let mut out = Vec::new();
        let step = one_line(text, &args(), &ClientConfig::default(), &mut out).unwrap();
        (step, String::from_utf8(out).unwrap())
    }

    #[test]
    fn help_quit_and_mistakes_are_answered_without_a_server() {
        assert_eq!(line("quit").0, Step::Quit);
        assert_eq!(line("  exit ").0, Step::Quit);
        assert_eq!(line("").0, Step::Go);
        let (step, help) = line("help");
        assert_eq!(step, Step::Go);
        for command in ["stock", "place", "adjust-stock", "load-workload", "stats"] {
            assert!(help.contains(command), "{command} in {help}");
        }
        assert!(line("help place").1.contains("--user"));
        assert!(line("help nonsense").1.contains("no command `nonsense`"));
        assert!(line("stok 1").1.contains("unrecognized subcommand"), "{}", line("stok 1").1);
        assert!(line("stock").1.contains("required"), "{}", line("stock").1);
        assert!(line("stock 'one").1.contains("unbalanced quotes"));
        assert!(line("shell").1.contains("already in the shell"));
    }

    #[test]
    fn a_failed_command_prints_its_error_and_the_shell_goes_on() {
        let (step, text) = line("stock 7");
        assert_eq!(step, Step::Go);
        assert!(text.starts_with("error: ") && text.contains("127.0.0.1:1"), "{text}");
    }
}
