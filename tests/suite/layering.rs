//! Layering: no import cycle among the top-level modules of `src/`.
//!
//! Reads every `src/**/*.rs` outside `#[cfg(test)]` items and files, collects the
//! `crate::<module>` (and `super::` that climbs to the crate root) references of code and
//! doc comments (rustdoc resolves intra-doc links, so they are references too; plain `//`
//! comments and string literals are not), and fails with the cycle when the module graph
//! has one. The order today, bottom to top (README "Architecture"): util/job/numfmt <
//! features < model < policy < store < executor < stats/forecast/report/provenance <
//! config < slurm < error < runner/status/verdict < replay/retrain < cli.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Known cycle edges tolerated while a refactor is in flight (none now). The test fails on an
/// entry whose edge is already gone, so the list cannot go stale.
const PENDING: &[(&str, &str)] = &[];

type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/a.rs` and `src/a/mod.rs` → `[a]`, `src/a/b.rs` → `[a, b]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The text with string/char literals and plain `//` and `/* */` comments blanked (kept:
/// code and `///`, `//!` doc comments). Newlines stay, so offsets map to the same lines.
fn code_and_docs(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &str| {
        out.extend(s.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    };
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("///") || rest.starts_with("//!") {
            let end = rest.find('\n').unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            i += end;
        } else if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with("/*") {
            let (mut depth, mut j) = (0usize, 0usize);
            while j < rest.len() {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += rest[j..].chars().next().map_or(1, char::len_utf8);
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest.starts_with('"') || rest.starts_with("b\"") {
            let start = if rest.starts_with('"') { 1 } else { 2 };
            let mut j = start;
            let rb = rest.as_bytes();
            while j < rb.len() && rb[j] != b'"' {
                j += if rb[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if let Some(len) = char_literal_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            let c = rest.chars().next().expect("non-empty");
            // A whole identifier at once, so that a `'` or `"` is only ever seen at a token start.
            if c.is_alphanumeric() || c == '_' {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.push_str(&rest[..end]);
                i += end;
            } else {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, `br#"…"#`) at the start of `s`.
fn raw_string_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = body.len() - body.trim_start_matches('#').len();
    let after = body[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = after.find(&close)?;
    Some(s.len() - after.len() + end + close.len())
}

/// Length of a char literal (`'a'`, `'\n'`, `'\''`, `'\u{1F600}'`) at the start of `s`;
/// `None` for a lifetime.
fn char_literal_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('\'')?;
    if let Some(esc) = rest.strip_prefix('\\') {
        let close = esc.get(1..)?.find('\'')? + 1;
        return Some(2 + close + 1);
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..]
        .starts_with('\'')
        .then(|| 1 + c.len_utf8() + 1)
}

/// Index just past the item that starts at `from` (after a `#[cfg(test)]`): through its
/// matching `}` if a `{` comes before any `;`, else through the `;`.
fn item_end(code: &str, from: usize) -> usize {
    let b = code.as_bytes();
    let mut i = from;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b';' if depth == 0 => return i + 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The code with every `#[cfg(test)]` item blanked; also the names of `#[cfg(test)] mod x;`
/// declarations (their files are test-only).
fn strip_cfg_test(code: &str) -> (String, Vec<String>) {
    let mut out = code.to_string();
    let mut test_mods = Vec::new();
    let mut search = 0;
    while let Some(pos) = code[search..].find("#[cfg(test)]") {
        let at = search + pos;
        // Only an attribute that starts its line (not one quoted in a doc comment).
        let line_start = code[..at].rfind('\n').map_or(0, |n| n + 1);
        if !code[line_start..at].trim().is_empty() {
            search = at + 1;
            continue;
        }
        let end = item_end(code, at + "#[cfg(test)]".len());
        let item = &code[at..end];
        let words: Vec<&str> = item
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(i) = words.iter().position(|w| *w == "mod") {
                if let Some(name) = words.get(i + 1) {
                    test_mods.push((*name).to_string());
                }
            }
        }
        out.replace_range(
            at..end,
            &item
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' })
                .collect::<String>(),
        );
        search = end;
    }
    (out, test_mods)
}

/// The crate-root names each `pub use <module>::…` of `lib.rs` re-exports, mapped to the
/// module (so `crate::Error` counts as `error`).
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for n in names
            .trim_matches(|c| c == '{' || c == '}' || char::is_whitespace(c))
            .split(',')
        {
            let n = n.trim();
            let n = n.rsplit(" as ").next().unwrap_or(n).trim();
            let n = n.rsplit("::").next().unwrap_or(n);
            if !n.is_empty() {
                map.insert(n.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

/// The first segment of every path a `crate::` (or root-reaching `super::`) reference names,
/// with its line number.
fn references(code: &str, module: &[String]) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let mut refs = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if !is_ident(b[i]) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        // A path starting here: crate::… or super::super::…
        let mut j = i;
        let mut level: Option<usize> = None;
        if code[j..].starts_with("crate::") {
            level = Some(0);
            j += "crate::".len();
        } else {
            let mut up = 0;
            while code[j..].starts_with("super::") {
                up += 1;
                j += "super::".len();
            }
            // A file's own module is `module`; each `super` climbs one level.
            if up > 0 && up >= module.len() {
                level = Some(0);
            } else if up > 0 {
                level = Some(module.len() - up);
            }
        }
        match level {
            Some(0) => {
                let line = line_of(i);
                if b.get(j) == Some(&b'{') {
                    let end = item_end(code, j);
                    // Top-level names of the group: first segment after `{` or a `,` at depth 1.
                    let group = &code[j + 1..end.saturating_sub(1)];
                    let mut depth = 0;
                    let mut start = true;
                    for (k, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => start = true,
                            c if start && (c.is_alphanumeric() || c == '_') => {
                                let name: String = group[k..]
                                    .chars()
                                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                                    .collect();
                                refs.push((name, line));
                                start = false;
                            }
                            c if c.is_whitespace() => {}
                            _ => start = false,
                        }
                    }
                    i = end;
                } else {
                    let name: String = code[j..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        refs.push((name, line));
                    }
                    i = j + 1;
                }
            }
            _ => i = j.max(i + 1),
        }
    }
    refs
}

/// The module graph: `from → to → ["file:line", …]`, test-only code left out.
fn graph() -> Graph {
    let src = src_dir();
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
                .or_else(|| l.strip_prefix("mod "))?;
            Some(l.trim_end_matches(';').trim().to_string())
        })
        .collect();
    let reexports = root_reexports(&lib);
    // Test-only files: `#[cfg(test)] mod x;` → x.rs or x/mod.rs beside the declaring module.
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut parsed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source file");
        let (code, test_mods) = strip_cfg_test(&code_and_docs(&text));
        let dir = match f.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => f.parent().expect("parent").to_path_buf(),
            _ => f.with_extension(""),
        };
        for m in test_mods {
            test_files.insert(dir.join(format!("{m}.rs")));
            test_files.insert(dir.join(&m).join("mod.rs"));
        }
        parsed.push((f.clone(), code));
    }
    let mut g: Graph = BTreeMap::new();
    for (f, code) in parsed {
        let module = module_path(&src, &f);
        // The crate root (lib.rs declares the modules; main.rs is the binary) and test-only
        // files (also those under a test-only directory) are not layers.
        if module.is_empty()
            || test_files
                .iter()
                .any(|t| f.starts_with(t.with_extension("")) || f == *t)
        {
            continue;
        }
        let from = module[0].clone();
        let rel = f
            .strip_prefix(&src)
            .expect("under src/")
            .display()
            .to_string();
        for (name, line) in references(&code, &module) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(m) = reexports.get(&name) {
                m.clone()
            } else {
                continue;
            };
            if to != from {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .push(format!("src/{rel}:{line}"));
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a.as_str()).chain(bs.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// One cycle through `comp` as `a -> b -> … -> a`, each edge with where it is made.
fn describe(comp: &[String], edges: &BTreeMap<String, BTreeSet<String>>, g: &Graph) -> String {
    let inside: BTreeSet<&str> = comp.iter().map(String::as_str).collect();
    // Breadth-first from the first module back to itself, within the component.
    let start = comp[0].as_str();
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(v) = queue.pop_front() {
        for w in edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if w == start {
                last = Some(v);
                break 'search;
            }
            if inside.contains(w) && !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    // Walk back from the module that closes the cycle to the start, then read it forwards.
    let mut back = Vec::new();
    let mut v = last.unwrap_or(start);
    while v != start {
        back.push(v);
        v = prev[v];
    }
    back.reverse();
    let path: Vec<&str> = std::iter::once(start)
        .chain(back)
        .chain(std::iter::once(start))
        .collect();
    let mut s = path.join(" -> ");
    for pair in path.windows(2) {
        let sites = &g[pair[0]][pair[1]];
        s.push_str(&format!(
            "\n    {} -> {}: {}",
            pair[0],
            pair[1],
            sites.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    s
}

fn check(g: &Graph, pending: &[(&str, &str)]) -> Result<(), String> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, bs) in g {
        for b in bs.keys() {
            if !pending.contains(&(a.as_str(), b.as_str())) {
                edges.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    let found = cycles(&edges);
    if found.is_empty() {
        return Ok(());
    }
    Err(found
        .iter()
        .map(|c| format!("import cycle among {c:?}: {}", describe(c, &edges, g)))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[test]
fn no_import_cycle_among_top_level_modules() {
    let g = graph();
    // The reader sees the graph: a broken parser that finds no edges would pass vacuously.
    assert!(
        g.get("runner").is_some_and(|t| t.contains_key("store"))
            && g.get("store").is_some_and(|t| t.contains_key("util")),
        "the module graph is missing edges it must have: {g:#?}"
    );
    let stale: Vec<_> = PENDING
        .iter()
        .filter(|(a, b)| !g.get(*a).is_some_and(|t| t.contains_key(*b)))
        .collect();
    assert!(
        stale.is_empty(),
        "PENDING lists edges that are gone; remove them: {stale:?}"
    );
    if let Err(e) = check(&g, PENDING) {
        panic!("{e}");
    }
}

#[test]
fn a_back_edge_is_reported_as_a_cycle() {
    // util is the bottom layer; an edge util -> runner closes runner -> … -> util.
    let mut g = graph();
    g.entry("util".into())
        .or_default()
        .entry("runner".into())
        .or_default()
        .push("src/util.rs:1".into());
    let e = check(&g, PENDING).expect_err("a back-edge must make a cycle");
    assert!(e.contains("util") && e.contains("runner"), "{e}");
}

#[test]
fn the_reader_skips_test_code_comments_and_strings() {
    let src = "use crate::a::X;\n// crate::b\n/// [`crate::c`]\nlet s = \"crate::d\";\n\
               let r = r#\"crate::e\"#; let c = '\"'; use crate::{f::{G, H}, g};\n\
               #[cfg(test)]\nmod tests { use crate::h; }\nfn f<'a>() { super::i(); }\n";
    let code = strip_cfg_test(&code_and_docs(src)).0;
    let names: Vec<String> = references(&code, &["m".to_string()])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "c", "f", "g", "i"]);
    let (_, mods) = strip_cfg_test("#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod t2 {}\n");
    assert_eq!(mods, ["tests"]);
}
