//! The manual cannot rot silently. Over README.md and every Markdown file under docs/:
//! - every relative link resolves: its file exists (relative to the linking file), and its
//!   `#anchor` is a heading of the target Markdown file (GitHub's slugs);
//! - every ```` ```yaml ```` block is a whole config that kd's own parser resolves; a
//!   ```` ```yaml fragment ```` only parses as YAML, and a ```` ```yaml file=PATH ```` block must
//!   also equal that file of the repository;
//! - every `kd ...` line in a `sh`, `bash`, `console` or `shell` block parses with the CLI.
//!   Usage synopses (`[OPTIONS]`, `CONFIG`) belong in `text` blocks, which nothing checks.
//!
//! Each check lists every broken item as `file:line: what` and fails once at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use kd_runner::cli::Cli;
use kd_runner::config;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// README.md and every `.md` file under docs/ (sorted), relative to the repository.
fn manual() -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name();
            let rel = dir.join(&name);
            if root.join(&rel).is_dir() {
                walk(root, &rel, out);
            } else if rel.extension().is_some_and(|e| e == "md") {
                out.push(rel);
            }
        }
    }
    let mut files = vec![PathBuf::from("README.md")];
    walk(&repo(), Path::new("docs"), &mut files);
    files.sort();
    files
}

/// A fenced code block: the words of its info string (```` ```yaml fragment ```` gives
/// `["yaml", "fragment"]`), the line of its opening fence and its lines, each with its number.
struct Fence {
    info: Vec<String>,
    line: usize,
    body: Vec<(usize, String)>,
}

impl Fence {
    fn text(&self) -> String {
        self.body.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

/// A Markdown text split into its prose (fenced lines blanked, so line numbers stay) and its
/// fenced blocks (```` ``` ```` or `~~~` fences of three or more).
fn split(text: &str) -> (Vec<String>, Vec<Fence>) {
    let (mut prose, mut fences) = (Vec::new(), Vec::new());
    let mut open: Option<(String, Fence)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        match open.take() {
            Some((fence, block)) if trimmed.starts_with(&fence) && trimmed.trim_end() == marker => {
                fences.push(block);
                prose.push(String::new());
            }
            Some((fence, mut block)) => {
                block.body.push((i + 1, line.to_string()));
                open = Some((fence, block));
                prose.push(String::new());
            }
            None if marker.len() >= 3 => {
                let info = trimmed[marker.len()..].split_whitespace();
                let block = Fence {
                    info: info.map(str::to_string).collect(),
                    line: i + 1,
                    body: Vec::new(),
                };
                open = Some((marker, block));
                prose.push(String::new());
            }
            None => prose.push(line.to_string()),
        }
    }
    (prose, fences)
}

/// GitHub's anchor for a heading: lowercase; every character that is not a letter, digit, space,
/// hyphen or underscore dropped; spaces become hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a Markdown file has: its ATX headings' slugs, a repeated one as `slug-1`,
/// `slug-2`, ... (as GitHub numbers them).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in split(text).0 {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` in prose, each with its line. Code spans are
/// skipped (a backtick opens one and the next closes it; a blank line ends any), and a
/// `"title"` after the target is dropped.
fn links(prose: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (i, line) in prose.iter().enumerate() {
        if line.trim().is_empty() {
            in_code = false;
        }
        // The line without its code spans.
        let mut plain = String::new();
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                plain.push(' ');
            } else if !in_code {
                plain.push(c);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push((i + 1, target.to_string()));
            rest = &rest[end..];
        }
    }
    out
}

/// What is wrong with link `target` of the file `from` (relative to the repository), if anything:
/// a missing file, or an anchor that no heading of the target Markdown file has.
fn broken_link(from: &Path, target: &str) -> Option<String> {
    if ["http://", "https://", "mailto:"]
        .iter()
        .any(|s| target.starts_with(s))
    {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        repo().join(from)
    } else {
        repo().join(from).parent().unwrap().join(path)
    };
    if !file.exists() {
        return Some(format!("`{target}`: no file {}", file.display()));
    }
    let markdown = file.extension().is_some_and(|e| e == "md");
    if anchor.is_empty() || !markdown {
        return None;
    }
    let text = std::fs::read_to_string(&file).unwrap();
    if anchors(&text).contains(anchor) {
        return None;
    }
    Some(format!(
        "`{target}`: no heading with anchor #{anchor} in that file"
    ))
}

/// What is wrong with a ```` ```yaml ```` block, if anything. A whole config resolves
/// (as on a machine with two GPUs, so `device: all` resolves too; resolving reads no data and
/// asks libtorch nothing); a `fragment` parses as YAML; `file=PATH` equals that file.
fn broken_yaml(block: &Fence) -> Option<String> {
    let text = block.text();
    for word in &block.info[1..] {
        if let Some(path) = word.strip_prefix("file=") {
            match std::fs::read_to_string(repo().join(path)) {
                Ok(original) if original == text => {}
                Ok(_) => return Some(format!("differs from {path}: copy the file again")),
                Err(e) => return Some(format!("names {path}, which does not read: {e}")),
            }
        }
    }
    if block.info.iter().any(|w| w == "fragment") {
        return serde_yaml::from_str::<serde_yaml::Value>(&text)
            .err()
            .map(|e| format!("a YAML fragment that does not parse: {e}"));
    }
    config::parse(&text, Path::new("the block"))
        .and_then(|raw| raw.resolve_on(&|| 2))
        .err()
        .map(|e| format!("not a config that resolves (mark a fragment ```yaml fragment): {e}"))
}

/// The logical lines of a shell block, each with the number of its first line: continuations
/// (`\` at the end) joined, a `$ ` prompt and a trailing `# comment` dropped.
fn shell_lines(block: &Fence) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut continued = false;
    for (n, raw) in &block.body {
        let line = raw.trim();
        let line = line.strip_prefix("$ ").unwrap_or(line);
        let (line, more) = match line.strip_suffix('\\') {
            Some(l) => (l.to_string(), true),
            None => (line.to_string(), false),
        };
        match out.last_mut() {
            Some((_, prev)) if continued => {
                prev.push(' ');
                prev.push_str(&line);
            }
            _ => out.push((*n, line)),
        }
        continued = more;
    }
    out
}

/// A shell line as commands of words: simple quoting ('...', "...", \x), a `#` that starts a
/// word ends the line, and `;`, `&`, `&&`, `|`, `||` outside quotes separate commands.
fn shell_words(line: &str) -> Vec<Vec<String>> {
    let (mut commands, mut words, mut word) = (Vec::new(), Vec::new(), None::<String>);
    let mut chars = line.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (None, '#') if word.is_none() => break,
            (None, ';' | '&' | '|') => {
                words.extend(word.take());
                commands.push(std::mem::take(&mut words));
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    commands.push(words);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The `kd` invocation among `words`, if they are one: `kd ...`, `./target/debug/kd ...` or
/// `target/release/kd ...`, after any `NAME=value` environment words; its words from `kd` on.
fn kd_command(words: &[String]) -> Option<Vec<String>> {
    let start = words.iter().position(|w| !is_env_assignment(w))?;
    let program = words[start].as_str();
    let is_kd = program == "kd" || program.ends_with("/kd");
    is_kd.then(|| {
        std::iter::once("kd".to_string())
            .chain(words[start + 1..].iter().cloned())
            .collect()
    })
}

/// `NAME=value` with an environment variable's name.
fn is_env_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// What clap says of a `kd` command line, if it refuses it (`--help` and `--version` pass).
fn broken_command(words: &[String]) -> Option<String> {
    match Cli::try_parse_from(words) {
        Ok(_) => None,
        Err(e) if !e.use_stderr() => None,
        Err(e) => Some(e.to_string().lines().next().unwrap_or("").to_string()),
    }
}

/// Every fenced block of the manual, with its file.
fn fences() -> Vec<(PathBuf, Fence)> {
    let mut out = Vec::new();
    for file in manual() {
        let text = std::fs::read_to_string(repo().join(&file)).unwrap();
        out.extend(split(&text).1.into_iter().map(|f| (file.clone(), f)));
    }
    out
}

/// Fail with every problem, one `file:line: what` a line; print how many items were checked.
fn report(what: &str, checked: usize, problems: &[String]) {
    eprintln!("docs: {checked} {what} checked, {} broken", problems.len());
    assert!(
        checked > 0,
        "no {what} found in README.md and docs/: is the parser broken?"
    );
    assert!(
        problems.is_empty(),
        "{} of {checked} {what} in README.md and docs/ are broken:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let (mut checked, mut problems) = (0, Vec::new());
    for file in manual() {
        let text = std::fs::read_to_string(repo().join(&file)).unwrap();
        for (line, target) in links(&split(&text).0) {
            checked += 1;
            if let Some(why) = broken_link(&file, &target) {
                problems.push(format!("{}:{line}: link {why}", file.display()));
            }
        }
    }
    report("links", checked, &problems);
}

#[test]
fn every_yaml_block_is_a_config_that_resolves_or_a_marked_fragment() {
    let (mut checked, mut problems) = (0, Vec::new());
    for (file, block) in fences() {
        if block.info.first().map(String::as_str) != Some("yaml") {
            continue;
        }
        checked += 1;
        if let Some(why) = broken_yaml(&block) {
            problems.push(format!(
                "{}:{}: yaml block: {why}",
                file.display(),
                block.line
            ));
        }
    }
    report("yaml blocks", checked, &problems);
}

#[test]
fn every_kd_command_line_in_a_shell_block_parses() {
    let (mut checked, mut problems) = (0, Vec::new());
    for (file, block) in fences() {
        let lang = block.info.first().map(String::as_str).unwrap_or("");
        if !["sh", "bash", "console", "shell"].contains(&lang) {
            continue;
        }
        for (line, text) in shell_lines(&block) {
            for words in shell_words(&text) {
                let Some(kd) = kd_command(&words) else {
                    continue;
                };
                checked += 1;
                if let Some(why) = broken_command(&kd) {
                    let shown = kd.join(" ");
                    problems.push(format!("{}:{line}: `{shown}`: {why}", file.display()));
                }
            }
        }
    }
    report("kd command lines", checked, &problems);
}

/// The checkers themselves, on made-up text: what they must accept and what they must catch.
#[test]
fn the_checkers_know_slugs_links_and_shell_lines() {
    assert_eq!(slug("Claims: `expect:`"), "claims-expect");
    assert_eq!(
        slug("Your own libtorch, and CUDA"),
        "your-own-libtorch-and-cuda"
    );
    assert_eq!(
        slug("CIFAR-100: the field's benchmark (`experiments/cifar100/`)"),
        "cifar-100-the-fields-benchmark-experimentscifar100"
    );
    let text = "# A\n\n```sh\n# not a heading\n```\n## A\n### B_c d\n";
    let found: Vec<_> = anchors(text).into_iter().collect();
    assert_eq!(found, ["a", "a-1", "b_c-d"]);

    let prose: Vec<String> = [
        "see [x](a.md#b) and `[y](not-a-link)`",
        "[z](c.md \"title\")",
    ]
    .map(String::from)
    .into();
    assert_eq!(links(&prose), [(1, "a.md#b".into()), (2, "c.md".into())]);
    assert!(broken_link(Path::new("README.md"), "docs/no-such-file.md").is_some());
    assert!(broken_link(Path::new("README.md"), "#no-such-heading").is_some());
    assert!(broken_link(Path::new("README.md"), "https://example.org/x").is_none());

    let block = Fence {
        info: vec!["sh".into()],
        line: 1,
        body: vec![
            (2, "$ KD_CACHE_DIR=/tmp/c kd sweep 'a b.yaml' \\".into()),
            (3, "    --set seeds=[0,1]   # a comment".into()),
            (4, "kd sweep x.yaml & kd report out; just test".into()),
        ],
    };
    let lines = shell_lines(&block);
    assert_eq!(lines.len(), 2);
    let words = shell_words(&lines[0].1);
    let kd = kd_command(&words[0]).unwrap();
    assert_eq!(kd, ["kd", "sweep", "a b.yaml", "--set", "seeds=[0,1]"]);
    assert!(broken_command(&kd).is_none());
    let commands = shell_words(&lines[1].1);
    assert_eq!(commands.len(), 3);
    assert!(
        kd_command(&commands[2]).is_none(),
        "`just` lines are not kd's"
    );
    let bad: Vec<String> = ["kd", "sweep", "x.yaml", "--no-such-flag"]
        .map(String::from)
        .into();
    assert!(broken_command(&bad).is_some());
    let help: Vec<String> = ["kd", "--help"].map(String::from).into();
    assert!(broken_command(&help).is_none());
}
