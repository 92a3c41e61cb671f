//! Tidy: mechanical checks of the project's invariants (see ARCHITECTURE.md),
//! in the spirit of rust-analyzer's `xtask/src/tidy.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("baas-core sits in the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name.starts_with("target") || name.starts_with('.') || name == "node_modules" {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file git knows or would add (tracked, or untracked and not
/// ignored); a plain walk where git is missing.
fn all_rust_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let listed = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success());
    let files: Vec<PathBuf> = match listed {
        Some(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| root.join(l))
            .filter(|p| p.exists())
            .collect(),
        None => {
            let mut files = Vec::new();
            rust_files(&root, &mut files);
            files
        }
    };
    assert!(
        files.len() > 20,
        "tidy found too few files; is the root right?"
    );
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let bad: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(bad.is_empty(), "files without a `//!` first line: {bad:#?}");
}

#[test]
fn no_test_is_switched_off() {
    let needles = [concat!("#[", "ignore"), concat!("#[", "should", "_panic")];
    let bad: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            needles.iter().any(|n| text.contains(n))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "a test that cannot fail is a defect: {bad:#?}"
    );
}

#[test]
fn unsafe_code_only_in_the_mmap_adapter() {
    let root = workspace_root();
    let needles = [
        concat!("unsafe", " {"),
        concat!("unsafe", " fn"),
        concat!("unsafe", " impl"),
    ];
    let bad: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| {
            let rel = f.strip_prefix(&root).unwrap_or(f);
            !rel.starts_with("adapters/flash-mmap") && !rel.starts_with("fuzz")
        })
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            needles.iter().any(|n| text.contains(n))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "unsafe code outside adapters/flash-mmap: {bad:#?}"
    );
}

#[test]
fn the_core_depends_on_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "baas-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let banned = [
        "diesel",
        "diesel_migrations",
        "rocket",
        "pyo3",
        "memmap2",
        "ureq",
        "hyper",
        "reqwest",
        "libsqlite3-sys",
        "pq-sys",
        "tokio",
        "tokio-postgres",
        "sqlx",
        "getrandom",
        "libc",
    ];
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| banned.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "baas-core must stay pure, but depends on {found:?}"
    );
}
