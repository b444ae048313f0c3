//! The architecture invariants of ARCHITECTURE.md that a source scan can check:
//! who may name each table in SQL, who may import which outside crate, that the
//! composition root does not import the CLI, how long a file may grow, and that the
//! code cites only what the repository holds. `the_scanner_finds_every_kind_of_breach`
//! proves each rule can fail.

use std::path::{Path, PathBuf};

/// Tables and the one place that may name them in SQL. A path ending in `/` is a
/// folder. The benchmark's raw baselines (`tests/`) query tables directly on
/// purpose and are not scanned; migrations own the DDL.
const TABLE_OWNERS: &[(&str, &str)] = &[
    ("events", "engine/src/store/"),
    ("streams", "engine/src/store/"),
    ("seals", "engine/src/store/"),
    ("run_queue", "engine/src/run_queue.rs"),
    ("variable_sets", "engine/src/variable_sets.rs"),
    ("run_logs", "engine/src/logs.rs"),
    ("api_tokens", "api/src/auth.rs"),
    ("webhook_deliveries", "engine/src/webhook_deliveries.rs"),
    ("forge_links", "engine/src/forge/outbox.rs"),
    ("forge_deployments", "engine/src/forge/outbox.rs"),
    ("forge_reports", "engine/src/forge/outbox.rs"),
    ("forge_checkpoint", "engine/src/forge/outbox.rs"),
];

/// Every table of the `read` schema belongs to the projections crate.
const READ_MODELS_OWNER: &str = "projections/src/";

/// Outside crates that only one part of the code may use (invariants 4 and 5).
const IMPORT_OWNERS: &[(&str, &str)] = &[
    ("bollard", "engine/src/runtime/docker/"),
    ("kube", "engine/src/runtime/kubernetes/"),
    ("k8s_openapi", "engine/src/runtime/kubernetes/"),
    ("async_graphql", "api/src/"),
    ("axum", "api/src/"),
];

/// The crates whose `src/` the rules cover.
const CRATES: &[&str] = &["engine", "projections", "api"];

const MAX_LINES: usize = 1200;

/// SQL words after which a table name follows. The code writes SQL keywords in
/// capitals, which tells `FROM events` in a query from "from events" in prose.
const TABLE_KEYWORDS: &[&str] = &["FROM", "INTO", "UPDATE", "JOIN", "TABLE"];

/// Whether `path` is `owner`: the file itself, or, for an owner without an
/// extension, the module file and its folder (`api/src/webhooks` is
/// `webhooks.rs` and `webhooks/`).
fn owned_by(path: &str, owner: &str) -> bool {
    if owner.ends_with('/') || owner.ends_with(".rs") {
        path.starts_with(owner)
    } else {
        path == format!("{owner}.rs") || path.starts_with(&format!("{owner}/"))
    }
}

/// What every rule finds wrong in `files` (path relative to the root, source).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, source) in files {
        let lines = source.lines().count();
        if lines > MAX_LINES {
            found.push(format!("{path}: {lines} lines, more than {MAX_LINES}"));
        }
        if source.contains("DESIGN.md") {
            found.push(format!("{path}: cites DESIGN.md, which is not in the repository"));
        }
        if !path.ends_with(".rs") {
            continue;
        }
        let lexed = lex(source);
        for literal in &lexed.strings {
            let words: Vec<String> = literal
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
            for pair in words.windows(2) {
                if !TABLE_KEYWORDS.contains(&pair[0].as_str()) {
                    continue;
                }
                let table = pair[1].as_str();
                if table.starts_with("read.") && !owned_by(path, READ_MODELS_OWNER) {
                    found.push(format!("{path}: SQL on {table}; read models belong to {READ_MODELS_OWNER}"));
                }
                for (owned, owner) in TABLE_OWNERS {
                    if table == *owned && !owned_by(path, owner) {
                        found.push(format!("{path}: SQL on {table}; only {owner} may touch it"));
                    }
                }
            }
        }
        for (krate, owner) in IMPORT_OWNERS {
            if !owned_by(path, owner) && mentions_path(&lexed.code, krate) {
                found.push(format!("{path}: uses {krate}; only {owner} may"));
            }
        }
        if path == "api/src/server.rs" && (mentions_path(&lexed.code, "cli") || lexed.code.contains("crate::cli")) {
            found.push(format!("{path}: imports the CLI; the CLI builds the server's config, not the other way"));
        }
    }
    found
}

/// Whether `code` names a path starting with the crate or module `name` (`name::…`).
fn mentions_path(code: &str, name: &str) -> bool {
    let pattern = format!("{name}::");
    code.match_indices(&pattern).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        // `shiplog_cli::` or `my_kube::` are other names; `::kube::` and `use kube::` are this one.
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Rust source split into code (comments and literals removed) and the contents
/// of its string literals.
struct Lexed {
    code: String,
    strings: Vec<String>,
}

fn lex(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let (mut code, mut strings) = (String::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' || ((c == 'r' || c == 'b') && starts_raw_or_byte_string(&chars, i)) {
            let (literal, end) = string_literal(&chars, i);
            strings.push(literal);
            code.push(' ');
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '"') is skipped; a lifetime ('a) is code.
            match (chars.get(i + 1), chars.get(i + 2)) {
                (Some('\\'), _) => {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                (Some(_), Some('\'')) => i += 3,
                _ => {
                    code.push(c);
                    i += 1;
                }
            }
        } else {
            code.push(c);
            i += 1;
        }
    }
    Lexed { code, strings }
}

/// `r"`, `r#"`, `b"`, `br"`, `br#"` at `i`, not inside an identifier such as `for"`.
fn starts_raw_or_byte_string(chars: &[char], i: usize) -> bool {
    if i > 0 && (chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i + 1;
    if chars[i] == 'b' && chars.get(j) == Some(&'r') {
        j += 1;
    }
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"') && (j > i + 1 || chars[i] == 'b' || chars[i] == 'r')
}

/// The contents of the string literal starting at `start`, and the index after it.
fn string_literal(chars: &[char], start: usize) -> (String, usize) {
    let mut i = start;
    let raw = chars[i] == 'r' || (chars[i] == 'b' && chars.get(i + 1) == Some(&'r'));
    while chars[i] != '"' && chars[i] != '#' {
        i += 1;
    }
    let mut hashes = 0;
    while chars[i] == '#' {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    let mut literal = String::new();
    while i < chars.len() {
        let c = chars[i];
        if !raw && c == '\\' {
            // An escaped character, or a line continuation: either way not the end.
            literal.push(' ');
            i += 2;
            continue;
        }
        if c == '"' && chars[i + 1..].iter().take(hashes).filter(|&&h| h == '#').count() == hashes {
            return (literal, i + 1 + hashes);
        }
        literal.push(c);
        i += 1;
    }
    (literal, i)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace").to_path_buf()
}

/// The files the rules cover: every source file under the crates' `src/`, and
/// every document and manifest that a reader follows.
fn repository_files() -> Vec<(String, String)> {
    let root = root();
    let mut paths = Vec::new();
    for krate in CRATES.iter().chain(&["tests"]) {
        collect(&root.join(krate).join("src"), &mut paths);
    }
    collect(&root.join("docs"), &mut paths);
    for top in ["README.md", "ARCHITECTURE.md", "Cargo.toml", ".ci/run"] {
        paths.push(root.join(top));
    }
    paths
        .into_iter()
        .map(|p| {
            let source = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let relative = p.strip_prefix(&root).expect("under the root").to_string_lossy().into_owned();
            (relative, source)
        })
        // The benchmark and the test harness stand outside the ownership rules
        // (their baselines read tables raw); the length and citation rules hold.
        .map(|(path, source)| if path.starts_with("tests/") { (path, strip_rust(&source)) } else { (path, source) })
        .collect()
}

/// A test-crate file as the length and citation rules see it (no SQL, no imports).
fn strip_rust(source: &str) -> String {
    source.lines().map(|_| "\n").collect::<String>() + if source.contains("DESIGN.md") { "DESIGN.md" } else { "" }
}

fn collect(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("a readable directory").path();
        if path.is_dir() {
            collect(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "md") {
            into.push(path);
        }
    }
}

#[test]
fn the_code_keeps_its_architecture_invariants() {
    let files = repository_files();
    assert!(files.iter().any(|(p, _)| p == "engine/src/store/mod.rs"), "the scan found the sources");
    let found = violations(&files);
    assert!(found.is_empty(), "architecture invariants broken (see ARCHITECTURE.md):\n{}", found.join("\n"));
}

#[test]
fn the_scanner_finds_every_kind_of_breach() {
    let file = |path: &str, source: &str| (path.to_owned(), source.to_owned());
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let files = [
        file("engine/src/worker.rs", "let n = sqlx::query(\"SELECT 1 FROM events WHERE stream_id = $1\");"),
        file("engine/src/lifecycle/mod.rs", "sqlx::query(\"UPDATE run_queue SET state = 'done'\")"),
        file("api/src/graphql/query.rs", "sqlx::query_scalar(r#\"SELECT count(*)\n FROM read.applications\"#)"),
        file("projections/src/projection.rs", "// reads from events\nuse bollard::Docker;"),
        file("api/src/server.rs", "use crate::cli::Serve;"),
        file("engine/src/template/mod.rs", &long),
        file("docs/api.md", "See DESIGN.md §7."),
        // Allowed: the owners, words in comments and prose, names that only contain the crate's.
        file("engine/src/store/mod.rs", "sqlx::query(\"INSERT INTO events (stream_id) VALUES ($1)\")"),
        file("engine/src/run_queue.rs", "sqlx::query(\"UPDATE run_queue SET state = 'done'\")"),
        file("projections/src/read.rs", "sqlx::query(\"SELECT view FROM read.environments\")"),
        file("engine/src/drift.rs", "/* folded from events */ let c = '\"'; fn f<'a>() { my_kube::x() }"),
        file("api/src/cli.rs", "println!(\"{}: generation {} from {} events\", a, b, c);"),
    ];
    let found = violations(&files);
    let expected = [
        "engine/src/worker.rs: SQL on events; only engine/src/store/ may touch it",
        "engine/src/lifecycle/mod.rs: SQL on run_queue; only engine/src/run_queue.rs may touch it",
        "api/src/graphql/query.rs: SQL on read.applications; read models belong to projections/src/",
        "projections/src/projection.rs: uses bollard; only engine/src/runtime/docker/ may",
        "api/src/server.rs: imports the CLI; the CLI builds the server's config, not the other way",
        "engine/src/template/mod.rs: 1201 lines, more than 1200",
        "docs/api.md: cites DESIGN.md, which is not in the repository",
    ];
    assert_eq!(found, expected);
}
