//! The server's modules import one another without a circle: each `use crate::…` (or path
//! through `crate::`) outside a file's tests is an edge, and the edges make no cycle. The
//! files lie in their layers' folders; each is the module its file name names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules `source` names through `crate::`, outside its `#[cfg(test)]` module.
fn imports(source: &str) -> BTreeSet<String> {
    let code = source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |end| &source[..end]);
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b}`: the first name of each top-level item.
                let (mut depth, mut start) = (0, true);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && !c.is_whitespace() => {
                            found.insert(ident(&group[i..]));
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.insert(ident(rest));
            }
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// The `use crate::` edges among the server's modules: each file under `src`, in whichever
/// layer's folder, is the module named by its file name (`lib.rs` mounts them flat).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    let mut folders = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path
                    .file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned();
                let source = std::fs::read_to_string(&path).expect("read");
                let mut uses = imports(&source);
                uses.remove(&name);
                let before = graph.insert(name.clone(), uses);
                assert!(before.is_none(), "two files make module {name}");
            }
        }
    }
    graph
}

/// A cycle through the graph, if any, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_scan_finds_grouped_and_inline_imports() {
    let source = "use crate::config;\nuse crate::{hub::Hub, protocol::{self, Kind}, room};\n\
                  fn f() { crate::metrics::x(); }\n// crate::not_this\n\
                  #[cfg(test)]\nmod tests {\n    use crate::server;\n}\n";
    let found: Vec<String> = imports(source).into_iter().collect();
    assert_eq!(found, ["config", "hub", "metrics", "protocol", "room"]);
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "a"]);
}

#[test]
fn the_server_modules_import_one_another_without_a_circle() {
    let graph = edges();
    // The top level's, and the layers' folders'.
    for module in ["config", "bus", "hub", "fanout", "recovery_state", "server"] {
        assert!(graph.contains_key(module), "{module} not found");
    }
    if let Some(found) = cycle(&graph) {
        panic!("import circle: {}", found.join(" -> "));
    }
}
