//! `orderd serve --config FILE`: a TOML file of the flags' settings, below
//! the `ORDERD_*` variables and the command line in precedence; a key that
//! is no setting is refused by name; `--print-config` says what a start
//! would use and where each value came from.

use std::process::Command;

fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orderd"));
    c.arg("serve").args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORDERD_")) {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    let out = c.output().expect("run orderd serve");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn the_file_sets_defaults_that_the_environment_and_the_command_line_override() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orderd.toml");
    std::fs::write(&file, "# a sale's server\ncores = \"0\"\ndurability = \"async\"\ncheckpoint-every-records = 1234\nno_metrics = true\n")
        .unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) = serve(&["--config", path, "--print-config"], &[]);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "durability"), "durability = \"async\"  # configuration file");
    assert_eq!(line(&out, "checkpoint-every-records"), "checkpoint-every-records = 1234  # configuration file");
    assert_eq!(line(&out, "no-metrics"), "no-metrics = true  # configuration file", "snake_case keys are accepted too");
    assert_eq!(line(&out, "flush-interval-ms"), "flush-interval-ms = 1000  # default");

    let (_, out, _) =
        serve(&["--print-config", "--durability", "sync"], &[("ORDERD_CONFIG", path), ("ORDERD_CHECKPOINT_EVERY_RECORDS", "99")]);
    assert_eq!(line(&out, "durability"), "durability = \"sync\"  # command line");
    assert_eq!(line(&out, "checkpoint-every-records"), "checkpoint-every-records = 99  # environment");
    assert_eq!(line(&out, "cores"), "cores = 0  # configuration file", "ORDERD_CONFIG names the file");
}

#[test]
fn a_key_that_is_no_setting_or_a_file_that_is_not_toml_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orderd.toml");
    std::fs::write(&file, "durabilty = \"sync\"\n").unwrap();
    let (ok, _, err) = serve(&["--config", file.to_str().unwrap(), "--print-config"], &[]);
    assert!(!ok);
    assert!(err.contains("sets `durabilty`, which is not a setting of `orderd serve`"), "{err}");
    std::fs::write(&file, "durability = \n").unwrap();
    let (ok, _, err) = serve(&["--config", file.to_str().unwrap(), "--print-config"], &[]);
    assert!(!ok && err.contains("is not valid TOML"), "{err}");
    // A value the flag refuses is refused as the flag would be.
    std::fs::write(&file, "durability = \"sometimes\"\n").unwrap();
    let (ok, _, err) = serve(&["--config", file.to_str().unwrap(), "--print-config"], &[]);
    assert!(!ok && err.contains("sometimes"), "{err}");
}
