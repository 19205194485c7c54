//! The layout stays a house whose rooms import downward only.
//!
//! Reads every file under `src/` (the library; `main.rs` is its own crate), finds the
//! modules each one names (`crate::…`, `super::…`, `self::…` paths outside comments and
//! string literals) and checks two things, with a message naming the files and the path
//! that breaks them:
//!
//! - no cycle among the files (`a.rs` imports `b.rs` imports `a.rs`);
//! - every import between the top-level folders runs down the layers in [`LAYERS`]
//!   (the order `src/lib.rs` documents), unless its line says why with a comment that
//!   starts `// upward:`.
//!
//! Run it alone with `cargo test --test layout`. It needs no service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom up; a module may import those on lower rows
/// only. Modules on one row do not import each other.
const LAYERS: &[&[&str]] = &[
    &["error", "redact"],
    &["model", "metrics"],
    &["mysql"],
    &["redis"],
    &["snapshot"],
    &["read", "strategy"],
    &["api"],
    &["config"],
    &["cmd"],
    &["bench"],
];

/// One file of the library: its module path (`strategy::binlog::tail`) and its code with
/// comments and string literals blanked out.
struct SourceFile {
    module: String,
    path: PathBuf,
    code: String,
    /// Lines (1-based) that carry an `// upward:` explanation.
    explained: BTreeSet<usize>,
}

#[test]
fn the_library_imports_downward_only() {
    let files = read_library(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let graph = import_graph(&files);

    let cycles = cycles(&graph.edges);
    assert!(
        cycles.is_empty(),
        "files that import each other in a loop:\n{}",
        cycles
            .iter()
            .map(|c| format!("  {}", c.join(" -> ")))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let upward: Vec<String> = graph
        .imports
        .iter()
        .filter(|i| !i.explained)
        .filter_map(|i| {
            let (from, to) = (top(&i.from), top(&i.to));
            let (rank_from, rank_to) = (rank(from), rank(to));
            (from != to && rank_to >= rank_from).then(|| {
                format!(
                    "  {}:{} imports {} ({from} is on layer {rank_from}, {to} on layer {rank_to})",
                    i.file.display(),
                    i.line,
                    i.to
                )
            })
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports that do not run down the layers of tests/layout.rs (move the code, or explain \
         the line with `// upward: <why>`):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checks_see_a_loop_and_an_upward_import() {
    // The detector itself: a synthetic house with a loop and an upward arrow.
    let files = vec![
        source("model::cell", "use crate::redis::applier::Applier;\n"),
        source("redis::applier", "use crate::model::cell::Cell;\n"),
        source("redis", "pub mod applier;\n"),
        source("model", "pub mod cell;\n"),
    ];
    let graph = import_graph(&files);
    assert_eq!(
        cycles(&graph.edges),
        vec![vec![
            "model::cell".to_owned(),
            "redis::applier".to_owned(),
            "model::cell".to_owned()
        ]]
    );
    let up = graph
        .imports
        .iter()
        .find(|i| i.from == "model::cell")
        .unwrap();
    assert!(rank(top(&up.to)) > rank(top(&up.from)));

    // An explained line is let through; comments and strings name nothing.
    let files = vec![
        source(
            "model::cell",
            "// crate::redis::applier in a comment\nlet s = \"crate::redis\";\nuse crate::redis::applier::X; // upward: a reason\n",
        ),
        source("redis::applier", ""),
        source("redis", ""),
        source("model", ""),
    ];
    let graph = import_graph(&files);
    assert_eq!(graph.imports.len(), 1);
    assert!(graph.imports[0].explained);
    assert_eq!(graph.imports[0].line, 3);
}

fn source(module: &str, text: &str) -> SourceFile {
    let (code, explained) = strip(text);
    SourceFile {
        module: module.to_owned(),
        path: PathBuf::from(format!("src/{}.rs", module.replace("::", "/"))),
        code,
        explained,
    }
}

/// An import of one module by a file.
struct Import {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
    explained: bool,
}

struct Graph {
    /// Module → modules it imports (files only, no self-edges).
    edges: BTreeMap<String, BTreeSet<String>>,
    imports: Vec<Import>,
}

fn read_library(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    collect(src, &mut paths);
    paths
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "main.rs"))
        .map(|path| {
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let (code, explained) = strip(&text);
            SourceFile {
                module: parts.join("::"),
                path,
                code,
                explained,
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code with comments and string literals replaced by spaces (lines kept), and the
/// lines whose comment starts with `upward:`.
fn strip(text: &str) -> (String, BTreeSet<usize>) {
    let mut code = String::with_capacity(text.len());
    let mut explained = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let mut out = String::with_capacity(line.len());
        let mut chars = line.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_string => {
                    chars.next();
                    out.push_str("  ");
                }
                '"' => {
                    in_string = !in_string;
                    out.push(' ');
                }
                '/' if !in_string && chars.peek() == Some(&'/') => {
                    let comment: String = chars.collect();
                    if comment
                        .trim_start_matches('/')
                        .trim_start()
                        .starts_with("upward:")
                    {
                        explained.insert(n + 1);
                    }
                    break;
                }
                _ if in_string => out.push(' '),
                c => out.push(c),
            }
        }
        code.push_str(&out);
        code.push('\n');
    }
    (code, explained)
}

/// Every module path each file names, resolved to the library's modules.
fn import_graph(files: &[SourceFile]) -> Graph {
    let modules: BTreeSet<&str> = files.iter().map(|f| f.module.as_str()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut imports = Vec::new();
    for file in files {
        edges.entry(file.module.clone()).or_default();
        for (n, line) in file.code.lines().enumerate() {
            for path in paths_in(line) {
                let Some(absolute) = absolute(&file.module, &path) else {
                    continue;
                };
                // The longest prefix that is a module of the library.
                let segments: Vec<&str> = absolute.split("::").collect();
                let Some(target) = (1..=segments.len())
                    .rev()
                    .map(|k| segments[..k].join("::"))
                    .find(|m| modules.contains(m.as_str()))
                else {
                    continue;
                };
                // A module naming itself or its own children is its tree, not an import.
                // (A child naming its parent's items, `super::Thing`, is an import.)
                if target == file.module || target.starts_with(&format!("{}::", file.module)) {
                    continue;
                }
                edges
                    .entry(file.module.clone())
                    .or_default()
                    .insert(target.clone());
                imports.push(Import {
                    file: file.path.clone(),
                    line: n + 1,
                    from: file.module.clone(),
                    to: target,
                    explained: file.explained.contains(&(n + 1)),
                });
            }
        }
    }
    Graph { edges, imports }
}

/// `crate::a::b`, `super::x`, `self::y` paths in a line of code, as written.
fn paths_in(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = line[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            // A whole word: not `xcrate::` or `mycrate::`.
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let end = line[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(line.len(), |e| at + e);
            found.push(line[at..end].trim_end_matches(':').to_owned());
        }
    }
    found
}

/// `path` (as written in `module`) from the crate root, without `crate::`.
fn absolute(module: &str, path: &str) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut rest = path;
    if let Some(r) = rest.strip_prefix("crate::") {
        base.clear();
        rest = r;
    } else if let Some(r) = rest.strip_prefix("self::") {
        rest = r;
    } else {
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop()?;
            rest = r;
        }
    }
    let joined: Vec<&str> = base
        .into_iter()
        .chain(rest.split("::").filter(|s| !s.is_empty()))
        .collect();
    (!joined.is_empty()).then(|| joined.join("::"))
}

/// The top-level module of a module path.
fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The layer of a top-level module; an unknown one is a failure, so a new folder must be
/// given its place in [`LAYERS`].
fn rank(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|row| row.contains(&top))
        .unwrap_or_else(|| panic!("the module {top} has no layer in tests/layout.rs LAYERS"))
}

/// Every elementary loop found by a depth-first search, each as the modules along it with
/// the first repeated at the end.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::New => visit(next, edges, marks, stack, found),
                Mark::Open => {
                    let start = stack.iter().position(|m| m == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    found.push(cycle);
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}
