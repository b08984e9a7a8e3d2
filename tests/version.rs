//! `orderd --version` says which commit the binary was built from, so an
//! operator can tell which build runs (issue 23: "a version that `orderd
//! --version` prints with its git commit"); `orderd completions` and
//! `orderd man` come from the same command tree.

use std::process::Command;

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_orderd")).arg("--version").output().expect("orderd --version");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(text.starts_with(&format!("orderd {} (commit ", env!("CARGO_PKG_VERSION"))), "{text}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        // In a checkout the build names its commit (built from this tree).
        Some(head) if std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").is_dir() => {
            assert!(text.ends_with(&format!("(commit {head})")), "{text} vs HEAD {head}");
        }
        _ => assert!(text.ends_with(')'), "{text}"),
    }
}

#[test]
fn completions_and_the_manual_page_are_generated_from_the_command_tree() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_orderd")).args(["completions", shell]).output().expect("orderd completions");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["serve", "admin", "host-check", "tail", "top", "adjust-stock", "checkpoint-every-records"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_orderd")).arg("man").output().expect("orderd man");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && page.contains(".TH orderd 1") && page.contains("host\\-check"), "{page}");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_orderd")).args(["man", "--dir"]).arg(dir.path()).output().expect("orderd man --dir");
    assert!(out.status.success());
    for page in ["orderd.1", "orderd-serve.1", "orderd-admin-load-catalogue.1"] {
        assert!(dir.path().join(page).is_file(), "no {page}");
    }
}
