//! The binaries' flags as their users see them: every default the README gives is the one the
//! binary uses, and bad values are refused with a message that names the flag.

use std::process::Command;

use crate::support::*;

/// The `[default: …]` that `binary --help` gives for `--flag`, if any.
fn help_default(help: &str, flag: &str) -> Option<String> {
    let mut in_block = false;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // clap indents a flag's own line by up to six spaces and its description by ten.
        if trimmed.starts_with('-') && line.len() - trimmed.len() <= 6 {
            in_block = trimmed
                .split([',', ' ', '='])
                .any(|word| word == format!("--{flag}"));
            continue;
        }
        if in_block {
            if let Some(rest) = trimmed.split("[default: ").nth(1) {
                return Some(rest.split(']').next().unwrap_or_default().to_owned());
            }
        }
    }
    None
}

/// Backticked words of a table cell, in order.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// `(flag, default)` of each README table row whose default cell starts with a backticked value;
/// a cell with two values (`1000`, `8388608`) goes with a row of two flags.
fn readme_defaults(readme: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("| `-")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let flags: Vec<&str> = backticked(cells[0])
            .into_iter()
            .flat_map(|f| f.split(", "))
            .filter_map(|f| f.strip_prefix("--"))
            .collect();
        // The default is the first cell after the flag that is not an environment variable.
        let Some(default) = cells[1..]
            .iter()
            .map(|c| c.trim_start_matches("| ").trim())
            .find(|c| !c.starts_with("`PUSHNOTE_"))
        else {
            continue;
        };
        if !default.starts_with('`') {
            continue;
        }
        // "`a`; with -S, `b`": only what holds without other flags.
        let values = backticked(default.split(';').next().unwrap_or_default());
        let pairs: Vec<(&str, &str)> = if values.len() == flags.len() {
            flags.iter().copied().zip(values.iter().copied()).collect()
        } else {
            vec![(flags[0], values[0])]
        };
        for (flag, value) in pairs {
            // clap shows an empty default as "".
            let value = if value == "''" { "\"\"" } else { value };
            rows.push((flag.to_owned(), value.to_owned()));
        }
    }
    rows
}

fn help_of(binary: &str) -> String {
    let out = Command::new(bin(binary))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{binary} --help");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_default_the_readme_gives_is_the_one_the_binaries_use() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let rows = readme_defaults(&readme);
    assert!(rows.len() >= 20, "README flag tables: {rows:?}");
    let server = help_of("pushnote-server");
    for (flag, value) in &rows {
        let shown = help_default(&server, flag)
            .unwrap_or_else(|| panic!("pushnote-server --help gives no default for --{flag}"));
        assert_eq!(
            &shown, value,
            "--{flag}: README says {value:?}, --help {shown:?}"
        );
    }
    // The forwarder's flags are named in a paragraph: `--flag` (`default`).
    let forwarder = help_of("pushnote-mq");
    let paragraph = readme
        .split("`pushnote-mq` takes")
        .nth(1)
        .expect("the forwarder's paragraph");
    let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
    let mut checked = 0;
    for piece in paragraph.split("`--").skip(1) {
        let (flag, rest) = piece.split_once('`').unwrap();
        if let Some(value) = rest.strip_prefix(" (`").and_then(|r| r.split('`').next()) {
            assert_eq!(
                help_default(&forwarder, flag).as_deref(),
                Some(value),
                "pushnote-mq --{flag}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "forwarder defaults checked: {checked}");
}

#[test]
fn values_that_cannot_work_are_refused_naming_the_flag() {
    for (binary, args, flag) in [
        ("pushnote-server", &["--heartbeat", "0"][..], "--heartbeat"),
        ("pushnote-server", &["--route", "/"], "--route"),
        (
            "pushnote-server",
            &["--idle-timeout", "0"],
            "--idle-timeout",
        ),
        ("pushnote-server", &["--address", "localhost"], "--address"),
        ("pushnote-mq", &["--topic-idle", "0"], "--topic-idle"),
        (
            "pushnote-mq",
            &["--max-topic-bytes", "1"],
            "--max-topic-bytes",
        ),
    ] {
        let out = Command::new(bin(binary))
            .args(args)
            .env_remove("PUSHNOTE_SECRET")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{binary} {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{binary} {args:?}: {stderr}");
    }
}
