//! The house's shape, checked from the sources: no import cycle between the runner's modules
//! (nor between the files of one of its folders), `main.rs` only parses and dispatches, config
//! resolution asks libtorch nothing, no `src/` file's code (its test module aside) grows past
//! the line limit, and no function there past [`MAX_FN_LINES`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

/// The most lines one non-test function in `crates/*/src` may span, from its `fn` line to its
/// closing brace: beyond it a function holds more than one concern (split it by concern).
const MAX_FN_LINES: usize = 100;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without its `#[cfg(test)]` module (tests may use anything).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a source names through `crate::`: `crate::a::x`, `crate::{a, b::y}`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(is_ident) {
            continue; // `kd_crate::` and the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The group's items at depth 1 (split at its top-level commas), each by its first name.
            let (mut depth, mut item) = (1, String::new());
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    c if depth == 1 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let name: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            refs.insert(name);
        }
    }
    refs
}

/// The runner's module graph: `a -> b` when a file of module `a` names `crate::b`.
fn runner_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = crates_dir().join("runner/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let deps = graph.entry(top.clone()).or_default();
        deps.extend(crate_refs(&code).into_iter().filter(|d| *d != top));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d)); // items of lib.rs (`crate::torch_lock`)
    }
    graph
}

/// The graph of the files of runner folder `folder` (`train`, `run`, ...): `a -> b` when file
/// `a` names its sibling `b` through `super::b` or `crate::<folder>::b`.
fn folder_graph(folder: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = crates_dir().join("runner/src").join(folder);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "mod")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = file.file_stem().unwrap().to_string_lossy().into_owned();
        if me == "mod" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        // `super::x` reads as `crate::x` to the reference reader.
        let code = code
            .replace("super::", "crate::")
            .replace(&format!("crate::{folder}::"), "crate::");
        let deps = graph.entry(me.clone()).or_default();
        deps.extend(
            crate_refs(&code)
                .into_iter()
                .filter(|d| *d != me && names.contains(d)),
        );
    }
    graph
}

#[test]
fn the_files_of_each_folder_have_no_import_cycle() {
    for folder in ["config", "plan", "run", "track", "train", "bench"] {
        let graph = folder_graph(folder);
        assert!(graph.len() >= 2, "{folder}: read the files: {graph:?}");
        let cycles: Vec<String> = graph
            .keys()
            .filter_map(|m| cycle_from(&graph, m))
            .map(|c| c.join(" -> "))
            .collect();
        assert!(cycles.is_empty(), "{folder}: import cycles: {cycles:#?}");
    }
    // The graph is real: the single and packed learners use the driver.
    let train = folder_graph("train");
    assert!(train["single"].contains("driver") && train["packed"].contains("driver"));
}

/// A cycle through `start`, as the path `start -> ... -> start`, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in &graph[&node] {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_reference_reader_sees_groups_and_paths() {
    let code = "use crate::{data::{self, X}, env, error::RunError};\nlet a = crate::plan::f();\n\
                use kd_crate::nope;";
    let refs: Vec<String> = crate_refs(code).into_iter().collect();
    assert_eq!(refs, ["data", "env", "error", "plan"]);
}

#[test]
fn runner_modules_have_no_import_cycle() {
    let graph = runner_graph();
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    // The graph is real: running a sweep uses the plan and the training driver.
    assert!(graph["run"].contains("plan") && graph["run"].contains("train"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn main_only_parses_and_dispatches() {
    let main = std::fs::read_to_string(crates_dir().join("runner/src/main.rs")).unwrap();
    let lines = main.lines().count();
    assert!(lines < 100, "main.rs has {lines} lines");
}

#[test]
fn config_resolution_asks_libtorch_nothing() {
    let mut files = Vec::new();
    rust_files(&crates_dir().join("runner/src/config"), &mut files);
    assert!(
        files.len() >= 3,
        "found the config sources: {}",
        files.len()
    );
    for file in files {
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        assert!(
            !code.contains("tch::"),
            "{} calls libtorch; device discovery belongs in env.rs",
            file.display()
        );
    }
}

/// Every `.rs` file under `crates/*/src`.
fn src_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files
}

#[test]
fn no_source_file_grows_past_the_limit() {
    let root = crates_dir();
    let files = src_files(&root);
    assert!(files.len() > 40, "found the sources: {}", files.len());
    let mut over = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        // Tests aside: the code before the file's `#[cfg(test)] mod tests`.
        let lines = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or("")
            .lines()
            .count();
        if lines > MAX_LINES {
            over.push(format!(
                "{rel}: {lines} lines of code (at most {MAX_LINES})"
            ));
        }
    }
    assert!(over.is_empty(), "split these files: {over:#?}");
}

/// `code` with every comment, string literal (raw ones too) and char literal blanked out (the
/// line breaks kept), so that the braces left are the code's own.
fn blank_literals(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        let end = if rest.starts_with(&['/', '/']) {
            rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            (2..rest.len())
                .find(|&j| rest[j - 1] == '*' && rest[j] == '/')
                .map_or(rest.len(), |j| j + 1)
        } else if rest[0] == 'r' && !prev_ident && matches!(rest.get(1), Some('"' | '#')) {
            // r"...", r#"..."#: ends at the quote followed by as many hashes.
            let hashes = rest[1..].iter().take_while(|&&ch| ch == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                0
            } else {
                let body = 2 + hashes;
                (body..rest.len())
                    .find(|&j| {
                        rest[j] == '"'
                            && rest[j + 1..]
                                .iter()
                                .take(hashes)
                                .filter(|&&h| h == '#')
                                .count()
                                == hashes
                    })
                    .map_or(rest.len(), |j| j + 1 + hashes)
            }
        } else if rest[0] == '"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != '"' {
                j += if rest[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == '\'' {
            // A char literal ('{', '\'', '\u{7b}'), not a lifetime ('a).
            match rest.iter().skip(1).position(|&ch| ch == '\'') {
                Some(j) if j == 1 || (rest[1] == '\\' && j <= 9) => j + 2,
                _ => 0,
            }
        } else {
            0
        };
        if end == 0 {
            out.push(c[i]);
            i += 1;
        } else {
            let end = end.min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        }
    }
    out
}

/// Each function with a body in `code` (literals blanked): its name, first line (1-based) and
/// length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let b: Vec<char> = code.chars().collect();
    let line_of = |i: usize| b[..i].iter().filter(|&&ch| ch == '\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < b.len() {
        let is_fn = b[i..].starts_with(&['f', 'n', ' ']) && (i == 0 || !is_ident(b[i - 1]));
        if !is_fn {
            i += 1;
            continue;
        }
        let name: String = b[i + 3..].iter().take_while(|&&ch| is_ident(ch)).collect();
        // Its body: the first `{` before any `;` (a declaration without a body has none).
        let Some(open) = (i..b.len()).find(|&j| b[j] == '{' || b[j] == ';') else {
            break;
        };
        if b[open] == ';' {
            i = open;
            continue;
        }
        let mut depth = 0;
        let mut close = open;
        for (j, &ch) in b.iter().enumerate().skip(open) {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let first = line_of(i);
        out.push((name, first, line_of(close) - first + 1));
        i += 3;
    }
    out
}

#[test]
fn the_function_reader_knows_literals_and_nesting() {
    let code =
        "fn a() {\n    let c = '{';\n    let s = \"}}\";\n    let r = r#\"{\"#;\n    // {\n    \
                fn inner<'x>(v: &'x str) -> &'x str { v }\n}\nfn b();\nfn c() { '\\'' }\n";
    let found = functions(&blank_literals(code));
    assert_eq!(
        found,
        [
            ("a".to_string(), 1, 7),
            ("inner".to_string(), 6, 1),
            ("c".to_string(), 9, 1)
        ]
    );
}

#[test]
fn no_function_grows_past_the_limit() {
    let root = crates_dir();
    let files = src_files(&root);
    let mut over = Vec::new();
    let mut seen = 0;
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        // Tests aside: the code before the file's `#[cfg(test)] mod tests`.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (name, line, len) in functions(&blank_literals(code)) {
            seen += 1;
            if len > MAX_FN_LINES {
                over.push(format!("{rel}:{line}: fn {name} spans {len} lines"));
            }
        }
    }
    assert!(seen > 500, "read the functions: {seen}");
    assert!(
        over.is_empty(),
        "split these functions by concern (at most {MAX_FN_LINES} lines): {over:#?}"
    );
}
