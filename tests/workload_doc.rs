//! The reference workloads are specified in `benches/WORKLOAD.md`, which
//! `--help` texts and the README point to: it exists, names every workload
//! the load generator runs, and (where the project's shared copy is beside
//! the repository, as in CI) says the same as `../shared/WORKLOAD.md`.

use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The document without the note that says where it comes from (the
/// paragraph that opens with "(The project's own copy").
fn body(text: &str) -> String {
    match text.find("(The project's own copy") {
        Some(start) => {
            let end = text[start..].find(")\n\n").map_or(text.len(), |e| start + e + 3);
            format!("{}{}", &text[..start], &text[end..])
        }
        None => text.to_owned(),
    }
}

#[test]
fn the_workload_document_the_help_texts_name_is_in_the_repository() {
    let doc = std::fs::read_to_string(repo().join("benches/WORKLOAD.md")).expect("benches/WORKLOAD.md is in the repository");
    for workload in ["`uniform`", "`hot`", "`zipf`", "`lifecycle`"] {
        assert!(doc.contains(workload), "benches/WORKLOAD.md describes {workload}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_orderd-load")).arg("--help").output().expect("orderd-load --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("benches/WORKLOAD.md"));
    let shared = repo().join("../shared/WORKLOAD.md");
    if let Ok(upstream) = std::fs::read_to_string(&shared) {
        assert_eq!(body(&doc).trim(), body(&upstream).trim(), "benches/WORKLOAD.md differs from {}: copy it again", shared.display());
    }
}
