//! What docs/DEPLOY.md tells a new user to type installs what the rest of the docs use.

use crate::support::*;

/// The files the install lines of docs/DEPLOY.md copy to /usr/local/bin/.
fn installed_binaries() -> Vec<String> {
    let text = std::fs::read_to_string(repo_path("docs/DEPLOY.md")).unwrap();
    // Lines continued with a backslash make one command.
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("install -m 0755") && l.ends_with("/usr/local/bin/"))
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|w| w.strip_prefix("target/release/").map(str::to_owned))
        .collect()
}

#[test]
fn the_install_lines_install_every_binary_the_project_builds() {
    let manifest = std::fs::read_to_string(repo_path("Cargo.toml")).unwrap();
    let built: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    assert_eq!(built, ["pushnote-mq", "pushnote-server", "pushnote"]);
    let installed = installed_binaries();
    for b in built {
        assert!(
            installed.iter().any(|i| i == b),
            "docs/DEPLOY.md installs {b}: {installed:?}"
        );
    }
}
