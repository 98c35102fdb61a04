//! Imports in core run one way: the data types in `model` import nothing
//! else of the crate, and no module imports one that imports it back. Read
//! from the sources, so that a change which closes a circle fails here
//! rather than in a reader's head.

// A test, helpers included: clippy.toml frees only its #[test] functions
// of the workspace's panic lints, and its helpers fail the same way.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::string_slice)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// `crate::a::b` is module `a`; `model`'s own modules count one by one.
fn module_of(path: &[&str]) -> Option<String> {
    match path {
        ["model", sub, ..] if sub.chars().next().is_some_and(char::is_lowercase) => {
            Some(format!("model::{sub}"))
        }
        [first, ..] => Some((*first).to_string()),
        [] => None,
    }
}

/// Every `crate::` path used outside comments and test modules.
fn imports(source: &str, own: &str) -> BTreeSet<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|p| !p.is_empty())
                .collect();
            if let Some(m) = module_of(&path) {
                if m != own {
                    found.insert(m);
                }
            }
        }
    }
    found
}

/// Module name -> the modules it imports, for every source file of core
/// (a directory module's files all count as that module).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
            let parts: Vec<&str> = parts.into_iter().filter(|p| *p != "mod").collect();
            // Test modules and the test support are compiled for tests only.
            let test_only = parts.first() == Some(&"testing") || parts.contains(&"tests");
            if parts == ["lib"] || test_only {
                continue;
            }
            let own = module_of(&parts).unwrap();
            let source = fs::read_to_string(&path).unwrap();
            let mut used = imports(&source, &own);
            // `super::x` inside model names a sibling model module.
            if own.starts_with("model::") {
                for (at, _) in source.match_indices("super::") {
                    let name: String = source[at + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.chars().next().is_some_and(char::is_lowercase) {
                        used.insert(format!("model::{name}"));
                    }
                }
                used.remove(&own);
            }
            graph.entry(own).or_default().extend(used);
        }
    }
    graph
}

#[test]
fn model_imports_nothing_outside_model() {
    let graph = graph();
    assert!(graph.keys().any(|m| m == "model::record"), "{graph:?}");
    for (module, used) in &graph {
        if module.starts_with("model") {
            let outside: Vec<&String> = used.iter().filter(|u| !u.starts_with("model")).collect();
            assert!(outside.is_empty(), "{module} imports {outside:?}");
        }
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    assert!(graph.len() > 20, "{graph:?}");
    // Depth-first search for a back edge, reporting the circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import circle: {} -> {m}", path[at..].join(" -> "));
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}
