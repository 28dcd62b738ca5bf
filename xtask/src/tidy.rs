//! The house rules a machine can check quickly: module headers, no skipped or
//! panic-expecting tests, ASCII sources, no `mod.rs`, and dependencies that
//! point down the layer table only.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// Which workspace crates each library crate may depend on (normal and build
/// dependencies). Adding an edge here is a reviewed change.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("sync-wal", &[]),
    ("sync-protocol", &[]),
    ("sync-outbox", &["sync-protocol"]),
    ("sync-store-file", &["sync-wal", "sync-outbox"]),
    (
        "sync-store-sqlite",
        &["sync-wal", "sync-outbox", "sync-protocol"],
    ),
    ("sync-engine", &["sync-outbox", "sync-protocol"]),
    (
        "sync-transport-http",
        &["sync-engine", "sync-outbox", "sync-protocol"],
    ),
    ("sync-server", &["sync-protocol"]),
    (
        "sync",
        &[
            "sync-wal",
            "sync-protocol",
            "sync-outbox",
            "sync-store-file",
            "sync-store-sqlite",
            "sync-engine",
            "sync-transport-http",
            "sync-server",
        ],
    ),
    (
        "sync-cli",
        &[
            "sync-wal",
            "sync-outbox",
            "sync-store-file",
            "sync-store-sqlite",
        ],
    ),
];

/// Runs every check and reports all violations at once.
pub(crate) fn check(root: &Path) -> Result<(), Error> {
    let mut problems = Vec::new();
    for path in rust_files(root) {
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = fs::read_to_string(&path)?;
        if !text.starts_with("//!") {
            problems.push(format!(
                "{shown}: does not open with a `//!` line saying what it owns"
            ));
        }
        if !text.is_ascii() {
            problems.push(format!("{shown}: non-ASCII source (use \\u{{..}} escapes)"));
        }
        for banned in [concat!("#[", "ignore"), concat!("#[", "should_panic")] {
            if text.contains(banned) {
                problems.push(format!(
                    "{shown}: uses {banned}]; assert the behaviour instead"
                ));
            }
        }
        if path.file_name().is_some_and(|n| n == "mod.rs") {
            problems.push(format!("{shown}: use foo.rs + foo/, not mod.rs"));
        }
    }
    problems.extend(dependency_problems(root)?);
    problems.extend(readme_snippet_problem(root)?);
    problems.extend(broken_doc_links(root)?);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
        .into())
    }
}

/// The README's client snippet (its first Rust block) must be, line for
/// line, the region of `examples/quickstart.rs` between `// README:start`
/// and `// README:end`, which CI compiles and a person can run: the first
/// code a newcomer reads always builds.
fn readme_snippet_problem(root: &Path) -> Result<Option<String>, Error> {
    let readme = fs::read_to_string(root.join("README.md"))?;
    let example = fs::read_to_string(root.join("examples/quickstart.rs"))?;
    let snippet: Vec<&str> = readme
        .lines()
        .skip_while(|line| *line != "```rust")
        .skip(1)
        .take_while(|line| *line != "```")
        .collect();
    let region: Vec<String> = example
        .lines()
        .skip_while(|line| line.trim() != "// README:start")
        .skip(1)
        .take_while(|line| line.trim() != "// README:end")
        .map(|line| line.strip_prefix("    ").unwrap_or(line).to_owned())
        .collect();
    if region.is_empty() {
        return Ok(Some(
            "examples/quickstart.rs: no `// README:start` ... `// README:end` region".to_owned(),
        ));
    }
    if snippet != region {
        return Ok(Some(
            "README.md: the first ```rust block is not the README region of \
             examples/quickstart.rs (copy the region into the README)"
                .to_owned(),
        ));
    }
    Ok(None)
}

/// Relative links in the README, ARCHITECTURE, CHANGELOG and `docs/` that
/// point at no file: the front door and the guide must not lead nowhere.
fn broken_doc_links(root: &Path) -> Result<Vec<String>, Error> {
    let mut pages = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("CHANGELOG.md"),
    ];
    for entry in fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut problems = Vec::new();
    for page in pages {
        let text = fs::read_to_string(&page)?;
        let dir = page.parent().unwrap_or(root);
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let file = target.split('#').next().unwrap_or(target);
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            if !dir.join(file).exists() {
                let shown = page
                    .strip_prefix(root)
                    .unwrap_or(&page)
                    .display()
                    .to_string();
                problems.push(format!("{shown}: link to {target}, which does not exist"));
            }
        }
    }
    Ok(problems)
}

fn dependency_problems(root: &Path) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    for entry in fs::read_dir(root.join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        let name = package_name(&text)
            .ok_or_else(|| format!("{}: no package name", manifest.display()))?;
        let Some((_, allowed)) = ALLOWED_EDGES
            .iter()
            .find(|(crate_name, _)| *crate_name == name)
        else {
            problems.push(format!(
                "crate {name} is not in the layer table of xtask/src/tidy.rs"
            ));
            continue;
        };
        for dependency in workspace_dependencies(&text) {
            if !allowed.contains(&dependency.as_str()) {
                problems.push(format!(
                    "{name} depends on {dependency}: dependencies must point down the layer table"
                ));
            }
        }
    }
    Ok(problems)
}

fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            return Some(
                value
                    .trim_start_matches([' ', '='])
                    .trim_matches('"')
                    .to_owned(),
            );
        }
    }
    None
}

/// Names of `sync*` crates in `[dependencies]` and `[build-dependencies]`.
fn workspace_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = matches!(line, "[dependencies]" | "[build-dependencies]");
        } else if in_deps {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            if name == "sync" || name.starts_with("sync-") {
                found.push(name.to_owned());
            }
        }
    }
    found
}

/// Every `.rs` file of the workspace's own packages.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let roots = ["crates", "xtask", "examples", "benches"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    crate::walk(roots, &["target", "fixtures"])
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

#[cfg(test)]
mod tests;
