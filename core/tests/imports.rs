//! Imports in core run one way: the data types in `model` import nothing
//! else of the crate, and no module imports one that imports it back. Read
//! from the sources, so that a change which closes a circle fails here
//! rather than in a reader's head.
//!
//! The sources are read as Rust tokens, not as lines: comments, literals
//! and test-only items (`#[cfg(test)]`) are set aside; `use` trees are
//! expanded however they are grouped, nested and wrapped; a path counts
//! from `crate::`, `super::`, `self::`, a child module or a name a `use`
//! bound, wherever it appears; and a name a module only imports (a
//! folder's `pub use`, or a `use` its children reach through `super::`)
//! leads on to the module that defines it; importing a module itself
//! (`use crate::discovery::{self, Round}`) is an arrow to it. Every module
//! is its own node, a folder's modules (`poller`, `poller::announce`) one
//! by one, so a circle inside a folder is seen too. (An inline `mod x {}`
//! that is not a test module would count as its file's module; core has
//! none.)

// A test, helpers included: clippy.toml frees only its #[test] functions
// of the workspace's panic lints, and its helpers fail the same way.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Module path (`a::b`, the crate root `""`) -> the modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The source's tokens: identifiers and punctuation (`::` as one token),
/// with comments, whitespace and literals (strings, characters, numbers)
/// left out, and lifetimes too.
fn tokens(source: &str) -> Vec<String> {
    let s: Vec<char> = source.chars().collect();
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    // Skips a quoted literal whose opening `"` is at `i`.
    let skip_string = |mut i: usize| {
        i += 1;
        while i < s.len() && s[i] != '"' {
            i += if s[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= s.len() {
                    break;
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(i);
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // An escape: past the quote, the backslash and the escaped
                // character (which may be a quote), to the closing quote.
                i += 3;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime: its name is not a path.
                i += 1;
                while ident(at(i)) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while ident(at(i)) {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while ident(at(i)) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            if raw && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '#' | '"'))) {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                i += 1;
                while i < s.len() && !(s[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#')) {
                    i += 1;
                }
                i += 1 + hashes;
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_string(i);
            } else if word == "b" && at(i) == '\'' {
                i += if at(i + 1) == '\\' { 4 } else { 3 };
                while at(i - 1) != '\'' {
                    i += 1;
                }
            } else if word == "r" && at(i) == '#' {
                // A raw identifier, `r#type`.
                i += 1;
            } else {
                out.push(word);
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push("::".to_string());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The tokens without test-only items: an item under `#[cfg(test)]` or
/// `#[cfg(all(test, ...))]` (a test module, inline or in its own file, a
/// test-only import or static) is left out up to its `;` or the end of its
/// `{ ... }`.
fn without_tests(t: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let attr = |j: usize| {
            t.get(j).map(String::as_str) == Some("#")
                && t.get(j + 1).map(String::as_str) == Some("[")
        };
        if attr(i) && t.get(i + 2).map(String::as_str) == Some("cfg") {
            let end = closing(t, i + 1);
            let args = &t[i + 4..end.saturating_sub(1)];
            let test_only = args.first().map(String::as_str) == Some("test")
                || (args.first().map(String::as_str) == Some("all")
                    && args.iter().any(|a| a == "test")
                    && !args.iter().any(|a| a == "not"));
            if test_only {
                let mut j = end + 1;
                while attr(j) {
                    j = closing(t, j + 1) + 1;
                }
                let mut depth = 0;
                while j < t.len() {
                    match t[j].as_str() {
                        "(" | "[" | "{" => depth += 1,
                        ")" | "]" => depth -= 1,
                        "}" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        ";" if depth == 0 => break,
                        _ => {}
                    }
                    j += 1;
                }
                i = j + 1;
                continue;
            }
        }
        out.push(t[i].clone());
        i += 1;
    }
    out
}

/// Where the bracket opened at `open` closes.
fn closing(t: &[String], open: usize) -> usize {
    let mut depth = 0;
    for (j, tok) in t.iter().enumerate().skip(open) {
        match tok.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    t.len()
}

/// One path a `use` names, and the name it binds (`None` for `_` or a
/// glob).
struct Use {
    path: Vec<String>,
    binds: Option<String>,
}

/// Expands the use tree at `t[*i..]` (after `use`, up to its `;`) under
/// `prefix`: `a::{b, c::{d as e, self}, f::*}` is four paths.
fn use_tree(t: &[String], i: &mut usize, mut path: Vec<String>, out: &mut Vec<Use>) {
    if t[*i] == "::" {
        *i += 1;
    }
    loop {
        match t[*i].as_str() {
            "{" => {
                *i += 1;
                while t[*i] != "}" {
                    use_tree(t, i, path.clone(), out);
                    if t[*i] == "," {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            "*" => {
                *i += 1;
                out.push(Use { path, binds: None });
                return;
            }
            word => {
                path.push(word.to_string());
                *i += 1;
                if t[*i] == "::" {
                    *i += 1;
                    continue;
                }
                if path.last().map(String::as_str) == Some("self") {
                    path.pop();
                }
                let mut binds = path.last().cloned();
                if t[*i] == "as" {
                    binds = Some(t[*i + 1].clone()).filter(|b| b != "_");
                    *i += 2;
                }
                out.push(Use { path, binds });
                return;
            }
        }
    }
}

/// What one module's source says, read once.
#[derive(Default)]
struct Module {
    /// `mod x;` declarations (not test-only).
    children: BTreeSet<String>,
    /// Names its `use`s bind, to the paths as written.
    binds: BTreeMap<String, Vec<String>>,
    /// Every path it names: each `use`'s, and every `a::b` in its code
    /// (whether it leads into the crate is decided later).
    paths: Vec<Vec<String>>,
}

fn module(source: &str) -> Module {
    let t = without_tests(&tokens(source));
    let mut m = Module::default();
    let mut i = 0;
    while i < t.len() {
        let next = t.get(i + 1).map(String::as_str).unwrap_or("");
        let is_ident = |w: &str| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        };
        if t[i] == "mod" && is_ident(next) && t.get(i + 2).map(String::as_str) == Some(";") {
            m.children.insert(next.to_string());
            i += 3;
        } else if t[i] == "use" && (is_ident(next) || matches!(next, "::" | "{" | "*")) {
            let mut uses = Vec::new();
            i += 1;
            use_tree(&t, &mut i, Vec::new(), &mut uses);
            for u in uses {
                if let Some(name) = &u.binds {
                    m.binds.insert(name.clone(), u.path.clone());
                }
                m.paths.push(u.path);
            }
        } else if is_ident(&t[i]) && next == "::" && (i == 0 || t[i - 1] != "::") {
            let mut path = vec![t[i].clone()];
            i += 1;
            while t.get(i).map(String::as_str) == Some("::")
                && t.get(i + 1).is_some_and(|w| is_ident(w))
            {
                path.push(t[i + 1].clone());
                i += 2;
            }
            m.paths.push(path);
        } else {
            i += 1;
        }
    }
    m
}

/// Every module of the crate whose root is `lib.rs`, found as rustc finds
/// them (`mod x;` in `dir/m.rs` is `dir/m/x.rs` or `dir/m/x/mod.rs`),
/// through `read` (a path relative to `src/` -> the file's text).
fn modules(read: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, Module> {
    let mut found = BTreeMap::new();
    let mut todo = vec![(String::new(), "lib.rs".to_string())];
    while let Some((name, file)) = todo.pop() {
        let source = read(&file).unwrap_or_else(|| panic!("no {file} for module {name:?}"));
        let m = module(&source);
        let dir = match file.rsplit_once('/') {
            _ if file == "lib.rs" => String::new(),
            Some((dir, "mod.rs")) => format!("{dir}/"),
            _ => format!("{}/", file.trim_end_matches(".rs")),
        };
        for child in &m.children {
            let flat = format!("{dir}{child}.rs");
            let file = if read(&flat).is_some() {
                flat
            } else {
                format!("{dir}{child}/mod.rs")
            };
            todo.push((join(&name, child), file));
        }
        found.insert(name, m);
    }
    found
}

fn join(module: &str, name: &str) -> String {
    if module.is_empty() {
        name.to_string()
    } else {
        format!("{module}::{name}")
    }
}

fn split(module: &str) -> Vec<String> {
    module
        .split("::")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The crate path `path` names when written in `module`, if it names one:
/// from `crate`, `super`, `self`, a child module, or a name a `use` of the
/// module bound; `None` for anything else (`std::`, a type's `Self::`).
fn absolute(
    mods: &BTreeMap<String, Module>,
    module: &str,
    path: &[String],
    depth: usize,
) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut here = split(module);
    let start = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here,
        "super" => {
            here.pop()?;
            let mut rest = rest;
            while rest.first().map(String::as_str) == Some("super") {
                here.pop()?;
                rest = &rest[1..];
            }
            return Some(here.into_iter().chain(rest.iter().cloned()).collect());
        }
        name if mods[module].children.contains(name) => {
            here.push(name.to_string());
            here
        }
        name => {
            let bound = mods[module].binds.get(name).filter(|_| depth < 8)?;
            absolute(mods, module, bound, depth + 1)?
        }
    };
    Some(start.into_iter().chain(rest.iter().cloned()).collect())
}

/// The module an absolute path leads to: the longest prefix that is a
/// module, then, while the next name is one that module only imports,
/// wherever that import leads.
fn target(mods: &BTreeMap<String, Module>, mut path: Vec<String>) -> String {
    for _ in 0..8 {
        let mut n = path.len();
        while !mods.contains_key(&path[..n].join("::")) {
            n -= 1;
        }
        let module = path[..n].join("::");
        let Some(name) = path.get(n) else {
            return module;
        };
        let Some(to) = mods[&module]
            .binds
            .get(name)
            .and_then(|b| absolute(mods, &module, b, 0))
        else {
            return module;
        };
        path = to
            .into_iter()
            .chain(path[n + 1..].iter().cloned())
            .collect();
    }
    path.join("::")
}

/// The import graph of the crate `read` reads (see [`modules`]).
fn graph(read: &dyn Fn(&str) -> Option<String>) -> Graph {
    let mods = modules(read);
    let mut graph = Graph::new();
    for (name, m) in &mods {
        if name.is_empty() {
            continue;
        }
        let used = graph.entry(name.clone()).or_default();
        for path in &m.paths {
            let Some(abs) = absolute(&mods, name, path, 0) else {
                continue;
            };
            let to = target(&mods, abs);
            if !to.is_empty() && to != *name {
                used.insert(to);
            }
        }
    }
    graph
}

/// The first circle of imports found, as the modules on it, the first one
/// again at the end.
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

/// Imports from `model` (and its modules) of modules outside it.
fn model_imports_outside(graph: &Graph) -> Vec<(String, String)> {
    let in_model = |m: &str| m == "model" || m.starts_with("model::");
    graph
        .iter()
        .filter(|(m, _)| in_model(m))
        .flat_map(|(m, used)| {
            used.iter()
                .filter(|u| !in_model(u))
                .map(move |u| (m.clone(), u.clone()))
        })
        .collect()
}

fn real_tree() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    graph(&|file| fs::read_to_string(src.join(file)).ok())
}

#[test]
fn model_imports_nothing_outside_model() {
    let graph = real_tree();
    assert!(graph.contains_key("model::record"), "{graph:?}");
    assert_eq!(model_imports_outside(&graph), []);
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = real_tree();
    assert!(graph.len() > 20, "{graph:?}");
    // A folder's modules are read one by one.
    assert!(
        graph["poller"].contains("poller::outcome"),
        "{:?}",
        graph["poller"]
    );
    if let Some(circle) = circle(&graph) {
        panic!("import circle: {}", circle.join(" -> "));
    }
}

/// The import graph of an in-memory crate: (file under `src/`, source).
fn graph_of(files: &[(&str, &str)]) -> Graph {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(f, s)| (f.to_string(), s.to_string()))
        .collect();
    graph(&|file| files.get(file).cloned())
}

fn edges(graph: &Graph, module: &str) -> Vec<String> {
    graph[module].iter().cloned().collect()
}

#[test]
fn a_circle_through_a_grouped_import_over_several_lines_is_seen() {
    let lib = "pub mod data;\npub mod ops;\npub mod other;";
    let data = "use crate::{\n    other::Thing,\n    ops::{\n        apply,\n        Step as S,\n    },\n};\npub struct Value;";
    let ops = "use crate::data::Value;\npub fn apply() {}\npub struct Step;";
    let graph = graph_of(&[
        ("lib.rs", lib),
        ("data.rs", data),
        ("ops.rs", ops),
        ("other.rs", "pub struct Thing;"),
    ]);
    assert_eq!(edges(&graph, "data"), ["ops", "other"]);
    assert_eq!(circle(&graph).unwrap(), ["data", "ops", "data"]);

    // Without the import back there is none.
    let graph = graph_of(&[
        ("lib.rs", lib),
        ("data.rs", data),
        ("ops.rs", "pub fn apply() {}\npub struct Step;"),
        ("other.rs", "pub struct Thing;"),
    ]);
    assert_eq!(circle(&graph), None);
}

#[test]
fn a_circle_between_two_modules_of_one_folder_through_super_is_seen() {
    let lib = "pub mod affinity;";
    let folder = "pub mod key;\npub mod walk;";
    let walk = "use super::key::Key;\npub struct Body;";
    let key = "use super::{walk::{self, Body}};\npub struct Key;";
    let graph = graph_of(&[
        ("lib.rs", lib),
        ("affinity/mod.rs", folder),
        ("affinity/walk.rs", walk),
        ("affinity/key.rs", key),
    ]);
    assert_eq!(edges(&graph, "affinity::walk"), ["affinity::key"]);
    assert_eq!(edges(&graph, "affinity"), Vec::<String>::new());
    assert_eq!(
        circle(&graph).unwrap(),
        ["affinity::key", "affinity::walk", "affinity::key"]
    );

    // The same circle written `crate::affinity::...`, and through a name
    // the folder re-exports: the arrow goes to the module defining it.
    let folder = "pub mod key;\npub mod walk;\npub use walk::Body;";
    let key = "pub fn read(b: crate::affinity::Body) -> Key { Key }\npub struct Key;";
    let walk = "pub struct Body;\nfn f() -> crate::affinity::key::Key { todo() }";
    let graph = graph_of(&[
        ("lib.rs", lib),
        ("affinity/mod.rs", folder),
        ("affinity/walk.rs", walk),
        ("affinity/key.rs", key),
    ]);
    assert_eq!(edges(&graph, "affinity::key"), ["affinity::walk"]);
    assert_eq!(edges(&graph, "affinity"), ["affinity::walk"]);
    assert_eq!(
        circle(&graph).unwrap(),
        ["affinity::walk", "affinity::key", "affinity::walk"]
    );
}

#[test]
fn paths_count_from_self_super_children_and_bound_names() {
    let graph = graph_of(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod poller;"),
        ("a.rs", "pub struct A;"),
        ("b.rs", "pub struct B;"),
        ("c.rs", "pub struct C;"),
        ("poller.rs", "mod outcome;\nuse outcome::Failure;\nuse crate::b;\nfn f() { b::make(); self::outcome::g(); }"),
        (
            "poller/outcome.rs",
            "use crate::a as first;\npub struct Failure;\nfn g() -> first::A { super::super::c::C; }",
        ),
    ]);
    assert_eq!(edges(&graph, "poller"), ["b", "poller::outcome"]);
    assert_eq!(edges(&graph, "poller::outcome"), ["a", "c"]);
}

#[test]
fn comments_literals_and_test_only_code_import_nothing() {
    let a = r##"
        //! Uses [`crate::b`] in prose.
        /* crate::b::B, /* nested */ crate::b::B */
        const S: &str = "crate::b::B";
        const R: &str = r#"crate::b::"B""#;
        const C: char = '"';
        const Q: [char; 2] = ['\'', '\u{22}'];
        fn f<'a>(x: &'a str) -> &'a str { x }
        #[cfg(test)]
        use crate::b::B;
        #[cfg(all(test, target_arch = "wasm32"))]
        fn g() { crate::b::B; }
        #[cfg(test)]
        mod tests {
            use crate::b::B;
        }
        #[cfg(test)]
        mod more;
        pub struct A;
    "##;
    let graph = graph_of(&[
        ("lib.rs", "pub mod a;\npub mod b;"),
        ("a.rs", a),
        ("b.rs", "use crate::a::A;"),
    ]);
    assert_eq!(edges(&graph, "a"), Vec::<String>::new());
    assert_eq!(circle(&graph), None);
    // Code that is not only for tests still counts.
    let a = "#[cfg(not(test))]\nfn g() { crate::b::f(); }";
    let graph = graph_of(&[
        ("lib.rs", "pub mod a;\npub mod b;"),
        ("a.rs", a),
        ("b.rs", "use crate::a::A;"),
    ]);
    assert_eq!(circle(&graph).unwrap(), ["a", "b", "a"]);
}

#[test]
fn model_importing_outside_model_is_seen() {
    let graph = graph_of(&[
        ("lib.rs", "pub mod model;\npub mod router;"),
        ("model/mod.rs", "pub mod record;"),
        ("model/record.rs", "use crate::{router::Router};"),
        ("router.rs", "pub struct Router;"),
    ]);
    assert_eq!(
        model_imports_outside(&graph),
        [("model::record".to_string(), "router".to_string())]
    );
}
