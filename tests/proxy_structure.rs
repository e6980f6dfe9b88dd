//! The proxy's structure rules (issue 9), checked by reading `src/proxy`:
//! no `Result<_, String>` anywhere, no function over 60 lines, `fetch` imports no auth, and no
//! two proxy modules importing each other. Run with `cargo test --test proxy_structure`;
//! `-- --nocapture` prints the measured numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 60;

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src/proxy is readable") {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let out: Vec<_> = files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    assert!(
        out.len() >= 15,
        "src/proxy should hold the split modules, found {}",
        out.len()
    );
    out
}

/// `(file, line, name, length)` of every `fn` with a body, by brace counting (strings and
/// comments holding braces are rare enough in this code to be ignored; a miscount only ever
/// makes a function look longer).
fn functions(name: &str, text: &str) -> Vec<(String, usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or(t.strip_prefix("pub(super) "))
            .unwrap_or(t);
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let fname: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut started, mut end) = (0i64, false, None);
        for (j, l2) in lines.iter().enumerate().skip(i) {
            let code = l2.split("//").next().unwrap_or("");
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !started && code.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            if started && depth <= 0 {
                end = Some(j);
                break;
            }
        }
        if let Some(e) = end {
            out.push((name.to_owned(), i + 1, fname, e - i + 1));
        }
    }
    out
}

#[test]
fn no_result_string_at_any_boundary() {
    let mut hits = Vec::new();
    for (name, text) in sources() {
        for (i, l) in text.lines().enumerate() {
            // The `grep -c 'Result<.*String>'` of the issue.
            if let Some(p) = l.find("Result<")
                && l[p..].contains("String>")
            {
                hits.push(format!("{name}:{}: {}", i + 1, l.trim()));
            }
        }
    }
    println!("Result<.*String> in src/proxy: {}", hits.len());
    assert!(hits.is_empty(), "typed errors only:\n{}", hits.join("\n"));
}

#[test]
fn no_function_over_sixty_lines() {
    let mut all: Vec<_> = sources()
        .iter()
        .flat_map(|(n, t)| functions(n, t))
        .collect();
    all.sort_by_key(|f| std::cmp::Reverse(f.3));
    assert!(
        all.len() > 100,
        "the scan found too few functions ({})",
        all.len()
    );
    for (file, line, name, len) in all.iter().take(5) {
        println!("{len:>3} lines  {file}:{line} {name}");
    }
    let long: Vec<String> = all
        .iter()
        .filter(|f| f.3 > MAX_FN_LINES)
        .map(|(file, line, name, len)| format!("{file}:{line} {name}: {len} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The proxy modules a file refers to in code (`use` lines and inline `super::x::` or
/// `crate::proxy::x::` paths; comments and doc links are not dependencies).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let code = l.trim();
        if code.starts_with("//") {
            continue;
        }
        for prefix in ["crate::proxy::", "super::super::", "super::"] {
            let mut rest = code;
            while let Some(p) = rest.find(prefix) {
                rest = &rest[p + prefix.len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !module.is_empty() && module != "super" {
                    out.insert(module);
                }
            }
        }
    }
    out
}

#[test]
fn fetch_imports_no_auth() {
    let src = sources();
    let fetch = &src
        .iter()
        .find(|(n, _)| n == "fetch.rs")
        .expect("fetch.rs")
        .1;
    let used = imports(fetch);
    println!("fetch.rs imports: {used:?}");
    for banned in [
        "upstream_auth",
        "upstream_creds",
        "upstream",
        "challenge",
        "client_auth",
    ] {
        assert!(!used.contains(banned), "fetch.rs imports {banned}");
    }
    assert!(
        !fetch.contains("Authorizer"),
        "fetch.rs names the Authorizer"
    );
}

#[test]
fn no_two_proxy_modules_import_each_other() {
    // Top-level module of each file: `handler/blob.rs` → `handler`.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in sources() {
        let module = name.split(['/', '.']).next().unwrap().to_owned();
        let deps = graph.entry(module.clone()).or_default();
        for m in imports(&text) {
            if m != module && m != "manifest" && m != "blob" && m != "tags" && m != "authz" {
                deps.insert(m);
            }
        }
    }
    assert_eq!(find_circle(&graph), None);
    assert!(graph.contains_key("fetch") && graph.contains_key("upstream"));
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The first import circle found, as `a -> b -> a`.
fn find_circle(g: &Graph) -> Option<String> {
    fn visit(
        m: &str,
        g: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if done.contains(m) {
            return None;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(format!("{} -> {m}", path[i..].join(" -> ")));
        }
        path.push(m.to_owned());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_circle_finder_finds_the_old_fetch_auth_circle() {
    let mut g = Graph::new();
    g.entry("fetch".into())
        .or_default()
        .insert("upstream_auth".into());
    g.entry("upstream_auth".into())
        .or_default()
        .insert("fetch".into());
    assert_eq!(
        find_circle(&g).as_deref(),
        Some("fetch -> upstream_auth -> fetch")
    );
    g.get_mut("fetch").unwrap().clear();
    assert_eq!(find_circle(&g), None);
}

#[test]
fn the_length_scan_measures_bodies_and_skips_declarations() {
    let text = "trait T {\n    fn decl(&self);\n}\npub async fn body() {\n    if x { y }\n}\n";
    let found = functions("t.rs", text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].2.as_str(), found[0].3), ("body", 3));
}
