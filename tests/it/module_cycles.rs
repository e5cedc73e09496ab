//! No import cycles between the crate's top-level modules. Each module's
//! non-test source is read for `crate::<module>` paths (comments and `#[cfg(test)]` code left
//! out: tests may reach across layers), and the graph they make must have no cycle. A new
//! cycle fails here with the path that closes it and the files that make each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module name → (module it uses → files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.push(path.clone());
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without what follows the first `#[cfg(test)]` (test
/// modules sit at the end of a file here) — or nothing, for a test-only file.
fn production_code(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_tests_dir = path.components().any(|c| c.as_os_str() == "tests");
    if name == "tests.rs" || name == "fuzzing.rs" || in_tests_dir {
        return String::new();
    }
    let text = fs::read_to_string(path).expect("a source file is readable");
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        Some(first.trim_end_matches(".rs").to_owned())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| top(p)).filter(|m| m != "lib" && m != "main").collect();
    let mut graph = Graph::new();
    for path in files.iter().filter(|p| p.is_file()) {
        let Some(from) = top(path).filter(|m| modules.contains(m)) else { continue };
        let code = production_code(path);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if name != from && modules.contains(&name) {
                let file = path.strip_prefix(src).unwrap_or(path).display().to_string();
                graph.entry(from.clone()).or_default().entry(name).or_default().insert(file);
            }
        }
    }
    graph
}

/// A cycle through the graph, as the list of modules on it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.get("proxy").is_some_and(|e| e.contains_key("sip")), "the scan found no edges: {graph:#?}");
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> =
            cycle.windows(2).map(|w| format!("{} -> {}: {:?}", w[0], w[1], graph[&w[0]][&w[1]])).collect();
        panic!("import cycle {}\n{}", cycle.join(" -> "), edges.join("\n"));
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut graph = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into()).or_default().entry(b.into()).or_default().insert(format!("{a}.rs"));
    };
    edge(&mut graph, "peer", "proxy");
    edge(&mut graph, "proxy", "sip");
    assert_eq!(find_cycle(&graph), None);
    edge(&mut graph, "sip", "peer");
    assert_eq!(find_cycle(&graph), Some(vec!["peer".into(), "proxy".into(), "sip".into(), "peer".into()]));
}
