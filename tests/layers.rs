//! The crate's layers, as `lib.rs` draws them: engine < networks < io < requirement < workflows
//! < app, with `error` shared by all. A module may use its own layer and those below it, never one
//! above, and the modules (`layer::module`) must not use each other in a cycle. Read from the
//! source text: every path into another module is written `crate::...`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 7] = [
    "error",
    "engine",
    "networks",
    "io",
    "requirement",
    "workflows",
    "app",
];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: src/engine/kernels/gemm.rs -> [engine, kernels, gemm].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path in `text` as [a, b] (b empty when the path stops at a).
fn crate_paths(text: &str) -> Vec<[String; 2]> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let a = ident(rest);
        let b = rest[a.len()..]
            .strip_prefix("::")
            .map(ident)
            .unwrap_or_default();
        out.push([a, b]);
    }
    out
}

/// The node a module belongs to in the cycle check: `layer::module`, or the layer itself.
fn node(path: &[String]) -> String {
    path.iter().take(2).cloned().collect::<Vec<_>>().join("::")
}

#[test]
fn no_layer_uses_a_layer_above_it_and_no_modules_use_each_other_in_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == ["lib"] || module == ["main"] {
            continue;
        }
        let mine = rank(&module[0])
            .unwrap_or_else(|| panic!("{}: not in a layer of lib.rs", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for [a, b] in crate_paths(&text) {
            let Some(theirs) = rank(&a) else {
                // A re-export at the crate root (crate::Result, crate::Device...).
                continue;
            };
            if theirs > mine {
                violations.push(format!("{} uses crate::{a}::{b}", file.display()));
            }
            let (from, to) = (node(&module), node(&[a.clone(), b.clone()]));
            if from != to && !b.is_empty() && a != "error" {
                edges.entry(from).or_default().insert(to);
            }
        }
        // `super::super::...` out of the layer would dodge the check above.
        let deepest = (1..=module.len())
            .rev()
            .find(|k| text.contains(&"super::".repeat(*k)))
            .unwrap_or(0);
        if deepest >= module.len() {
            violations.push(format!(
                "{} reaches out of its layer with super::",
                file.display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );

    // Cycles: depth-first search over the module graph.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(c) = visit(n, &edges, &mut state, &mut Vec::new()) {
                panic!("module cycle: {}", c.join(" -> "));
            }
        }
    }
}

#[test]
fn the_checker_sees_paths_and_cycles() {
    // The parser must find what the test relies on, or the test above proves nothing.
    let paths =
        crate_paths("use crate::engine::device::Device; x = crate::io::read(p); y_crate::no");
    assert_eq!(
        paths,
        vec![
            ["engine".to_string(), "device".to_string()],
            ["io".to_string(), "read".to_string()]
        ]
    );
    assert_eq!(
        module_of(Path::new("/s"), Path::new("/s/engine/kernels/mod.rs")),
        ["engine", "kernels"]
    );
    assert!(rank("app") > rank("workflows") && rank("networks") < rank("io"));
}
