//! The crate's layering, checked on its source (docs/design.md, "Layering").
//!
//! 1. The modules depend on each other without a cycle. The graph has one
//!    node per file's module (`process`, `connection::listener`,
//!    `reduction::codec`, `managers::server::objects`, ...), so it covers the
//!    top-level modules and the submodules inside each directory alike. An
//!    edge is a `crate::`, `super::` or `self::` path (in a `use` or in code,
//!    `use crate::{x, y}` groups included), or a bare path into a submodule
//!    the file declares, that names an item of another module. A `pub use`
//!    re-export is a name, not a use: a path through it resolves to the
//!    module that defines the item (so a directory's `mod.rs`, its face, does
//!    not depend on what it re-exports). Comments, strings, `$crate` paths
//!    (macro bodies expand in the caller) and `#[cfg(test)]` modules do not
//!    count. `platform` may use only `error` and `util`.
//! 2. Only `platform/` talks to the kernel: no `libc::`, `nix::` or `unsafe`
//!    elsewhere, except the entries of [`KERNEL_ALLOWED`], each with its reason.
//!
//! Both lists of exceptions are explicit so that fixing one means deleting its
//! entry, and a new violation fails with the file and the offending text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Packages whose inner cycles are a known follow-up: a cycle all of whose
/// modules lie inside one of these is allowed (cycles that leave it are not).
const CYCLES_ALLOWED_WITHIN: &[&str] = &[
    // None: the managers' inner cycles (issue 13) are untangled.
];

/// Files outside `platform/` that may still name `libc::`/`nix::` or use
/// `unsafe`, with what they may name and why.
const KERNEL_ALLOWED: &[(&str, &str, &str)] = &[
    // The one function-pointer rebuild (docs/design.md; STYLE.md).
    (
        "src/reduction/call.rs",
        "unsafe",
        "the FnRef trampoline rebuild",
    ),
    // `test_support!` puts `init` in `.init_array`: an unsafe attribute in a
    // macro the user's crate expands, so it cannot call into platform/.
    (
        "src/spawn.rs",
        "unsafe",
        "#[unsafe(link_section)] in test_support!",
    ),
    // Errno and signal numbers as data (error conversion, signal names): no
    // system call.
    ("src/error.rs", "nix::", "Errno -> Error, signal names"),
    // Errno values compared, no system call.
    (
        "src/connection/listener.rs",
        "libc::",
        "ECONNABORTED compared",
    ),
    // poll event bit passed to platform::fd::wait_for.
    ("src/spawn.rs", "libc::", "POLLRDHUP passed to platform"),
    ("src/process.rs", "libc::", "POLLRDHUP passed to platform"),
    // The fuzzing entry points (feature `fuzzing`, never in a user build)
    // build their raw inputs with pipes and pwrite.
    ("src/fuzzing.rs", "nix::", "fuzz inputs"),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are
/// `["a", "b"]`, `src/lib.rs` is `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        _ => parts.push(last.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The source with comments, string and char literals blanked out (kept as
/// spaces, so that tokens stay apart).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(' ');
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push(' ');
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Tokens: identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// A path's segments from `toks[i]` on (`a :: b :: c`), with `{...}` groups
/// expanded into one path per leaf.
fn paths_from(toks: &[String], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match toks.get(i).map(String::as_str) {
            Some("{") => {
                // A group: each comma-separated element continues the path.
                i += 1;
                loop {
                    match toks.get(i).map(String::as_str) {
                        Some("}") | None => return,
                        Some(",") => i += 1,
                        _ => {
                            paths_from(toks, i, path.clone(), out);
                            // Skip this element, nested groups included.
                            let mut depth = 0;
                            while let Some(t) = toks.get(i) {
                                match t.as_str() {
                                    "{" => depth += 1,
                                    "}" if depth == 0 => break,
                                    "}" => depth -= 1,
                                    "," if depth == 0 => break,
                                    _ => {}
                                }
                                i += 1;
                            }
                        }
                    }
                }
            }
            Some(t) if t.chars().next().is_some_and(is_ident) => {
                path.push(t.to_string());
                if toks.get(i + 1).map(String::as_str) == Some("::") {
                    i += 2;
                } else {
                    out.push(path);
                    return;
                }
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// What a file names: the absolute paths (from the crate root) its code and
/// private `use`s refer to, and its re-exports (`pub use`), as
/// (module, name, absolute path of the item).
#[derive(Default)]
struct Refs {
    uses: Vec<Vec<String>>,
    reexports: Vec<(Vec<String>, String, Vec<String>)>,
    /// Names a private `use` brings in, to the path they stand for
    /// (`use crate::reduction;` makes `reduction::encode` a crate path).
    aliases: BTreeMap<String, Vec<String>>,
}

/// As [`referenced_paths_with`], with the file's own `use` names resolved.
fn referenced_paths(file_module: &[String], code: &str) -> Refs {
    let first = referenced_paths_with(file_module, code, &BTreeMap::new());
    referenced_paths_with(file_module, code, &first.aliases)
}

fn referenced_paths_with(
    file_module: &[String],
    code: &str,
    aliases: &BTreeMap<String, Vec<String>>,
) -> Refs {
    let toks = tokens(code);
    // Where a bare `x::` path starts: a submodule declared in this file
    // (`mod x;`), or a name a `use` brought in.
    let mut roots: BTreeMap<String, Vec<String>> = aliases.clone();
    for i in 0..toks.len().saturating_sub(2) {
        if toks[i] == "mod" && toks[i + 2] == ";" {
            let mut p = file_module.to_vec();
            p.push(toks[i + 1].clone());
            roots.insert(toks[i + 1].clone(), p);
        }
    }
    let mut refs = Refs::default();
    let mut in_use = false;
    // Inline `mod name { ... }` blocks shift what `super`/`self` mean.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    // Inside a `pub use ...;` (a re-export: a name, not a use).
    let mut in_pub_use = false;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            ";" => {
                in_pub_use = false;
                in_use = false;
            }
            "mod" if toks.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((toks[i + 1].clone(), depth));
                // `#[cfg(test)] mod tests {`: unit tests may drive the code
                // they test through the layer above (a framing test through
                // `pipe`); they are not part of the layering.
                let attr = ["#", "[", "cfg", "(", "test", ")", "]"];
                if i >= attr.len() && toks[i - attr.len()..i].iter().eq(attr.iter()) {
                    let mut k = i + 3;
                    let mut d = 1;
                    while k < toks.len() && d > 0 {
                        match toks[k].as_str() {
                            "{" => d += 1,
                            "}" => d -= 1,
                            _ => {}
                        }
                        k += 1;
                    }
                    inline.pop();
                    i = k;
                    continue;
                }
            }
            "use" => {
                // `pub use`, `pub(crate) use`, `pub(in a::b) use`.
                let mut k = i;
                if k > 0 && toks[k - 1] == ")" {
                    while k > 0 && toks[k - 1] != "(" {
                        k -= 1;
                    }
                    k = k.saturating_sub(1);
                }
                in_pub_use = k > 0 && toks[k - 1] == "pub";
                in_use = true;
            }
            _ => {}
        }
        let starts_path = i == 0 || !matches!(toks[i - 1].as_str(), "::" | "." | "$");
        let relative = roots.contains_key(t)
            && inline.is_empty()
            && (!in_use || (i > 0 && toks[i - 1] == "use"));
        if starts_path
            && (matches!(t, "crate" | "super" | "self") || relative)
            && toks.get(i + 1).map(String::as_str) == Some("::")
        {
            let mut base: Vec<String> = file_module.to_vec();
            base.extend(inline.iter().map(|(n, _)| n.clone()));
            let here = base.clone();
            let mut j = i;
            match t {
                "crate" => {
                    base.clear();
                    j += 2;
                }
                "self" => j += 2,
                "super" => {
                    while toks.get(j).map(String::as_str) == Some("super")
                        && toks.get(j + 1).map(String::as_str) == Some("::")
                    {
                        base.pop();
                        j += 2;
                    }
                }
                _ => {
                    // A relative path: from where the name stands for.
                    base = roots[t].clone();
                    base.pop();
                }
            }
            let mut found = Vec::new();
            paths_from(&toks, j, base, &mut found);
            if in_pub_use {
                for p in found {
                    if let Some(name) = p.last() {
                        refs.reexports.push((here.clone(), name.clone(), p));
                    }
                }
            } else {
                if in_use && inline.is_empty() {
                    for p in &found {
                        let mut p = p.clone();
                        if p.last().is_some_and(|l| l == "self") {
                            p.pop();
                        }
                        if let Some(name) = p.last() {
                            refs.aliases.insert(name.clone(), p.clone());
                        }
                    }
                }
                refs.uses.extend(found);
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    refs
}

struct Crate {
    /// Each file's module path, what it names, and its code (stripped).
    files: Vec<(PathBuf, Vec<String>, Refs, String)>,
    /// Every module that has a file.
    modules: BTreeSet<Vec<String>>,
    /// Re-exports: (module, name) -> the item's absolute path.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

fn load() -> Crate {
    let mut paths = Vec::new();
    rust_files(&src_dir(), &mut paths);
    let mut files = Vec::new();
    let mut modules = BTreeSet::new();
    let mut reexports = BTreeMap::new();
    for p in paths {
        let module = if p.file_name().unwrap() == "fuzzing.rs" {
            // `#[path = "fuzzing.rs"] pub mod __fuzz;`
            vec!["__fuzz".to_string()]
        } else {
            module_of(&p)
        };
        let code = strip(&std::fs::read_to_string(&p).unwrap());
        let refs = referenced_paths(&module, &code);
        for (m, name, target) in &refs.reexports {
            reexports.insert((m.clone(), name.clone()), target.clone());
        }
        modules.insert(module.clone());
        files.push((p, module, refs, code));
    }
    Crate {
        files,
        modules,
        reexports,
    }
}

/// The module (file) that defines what `path` names, through re-exports;
/// `None` for the crate root itself (macros) and for names it cannot place.
fn node(krate: &Crate, path: &[String]) -> Option<String> {
    let mut path = path.to_vec();
    for _ in 0..16 {
        // The longest prefix of `path` that is a module with a file.
        let len = (0..=path.len())
            .rev()
            .find(|&n| krate.modules.contains(&path[..n]))
            .unwrap_or(0);
        let module = path[..len].to_vec();
        match path.get(len) {
            Some(name)
                if krate
                    .reexports
                    .contains_key(&(module.clone(), name.clone())) =>
            {
                let mut next = krate.reexports[&(module, name.clone())].clone();
                next.extend_from_slice(&path[len + 1..]);
                if next == path {
                    break;
                }
                path = next;
            }
            _ if module.is_empty() => return None,
            _ => return Some(module.join("::")),
        }
    }
    None
}

type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Module dependency edges between files: from -> to -> one reference that
/// makes the edge (for the message).
fn edges(krate: &Crate) -> Graph {
    let mut g = Graph::new();
    for (file, module, refs, _) in &krate.files {
        if module.is_empty() {
            continue; // the crate root: re-exports and module declarations
        }
        let from = module.join("::");
        let shown = file.strip_prefix(src_dir()).unwrap().display().to_string();
        for path in &refs.uses {
            let Some(to) = node(krate, path) else {
                continue;
            };
            if to != from {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("{shown}: crate::{}", path.join("::")));
            }
        }
    }
    g
}

/// Every elementary cycle's node set found by a DFS from each node (enough to
/// name each strongly connected component's cycles here).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    fn dfs(
        g: &Graph,
        start: &str,
        at: &str,
        stack: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        for next in g.get(at).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                let mut c = stack.clone();
                c.sort();
                found.insert(c);
            } else if !stack.contains(next) && next.as_str() > start {
                stack.push(next.clone());
                dfs(g, start, next, stack, found);
                stack.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in g.keys() {
        dfs(g, start, start, &mut vec![start.clone()], &mut found);
    }
    found.into_iter().collect()
}

fn describe(g: &Graph, cycle: &[String]) -> String {
    let mut lines = Vec::new();
    for a in cycle {
        for b in cycle {
            if let Some(why) = g.get(a).and_then(|m| m.get(b)) {
                lines.push(format!("  {a} -> {b}   ({why})"));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn module_graph_is_acyclic() {
    let krate = load();
    let g = edges(&krate);
    // The test sees the edges it must: these exist and are the layering.
    for (a, b) in [
        ("connection", "platform::linux::fd"),
        ("process", "spawn"),
        ("spawn", "reduction::call"),
        ("connection", "reduction::codec"),
        ("reduction::handles", "connection"),
        ("managers::channel", "managers::mailbox"),
    ] {
        assert!(
            g.get(a).is_some_and(|m| m.contains_key(b)),
            "expected edge {a} -> {b}; graph: {g:#?}"
        );
    }
    let found = cycles(&g);
    let unexpected: Vec<String> = found
        .iter()
        .filter(|c| !inside_allowed(c))
        .map(|c| format!("cycle {c:?}:\n{}", describe(&g, c)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "module dependency cycles (docs/design.md, Layering):\n{}",
        unexpected.join("\n")
    );
    // An allowance whose cycles are all gone must leave the list, so that
    // new ones cannot come back unnoticed.
    for prefix in CYCLES_ALLOWED_WITHIN {
        assert!(
            found
                .iter()
                .any(|c| c.iter().all(|m| m.starts_with(prefix))),
            "no cycle inside {prefix} any more: delete it from CYCLES_ALLOWED_WITHIN"
        );
    }
}

/// Whether every module of `cycle` lies inside one allowed package.
fn inside_allowed(cycle: &[String]) -> bool {
    CYCLES_ALLOWED_WITHIN
        .iter()
        .any(|p| cycle.iter().all(|m| m.starts_with(p)))
}

#[test]
fn platform_is_the_bottom_layer() {
    let krate = load();
    let g = edges(&krate);
    let above: Vec<_> = g
        .iter()
        .filter(|(from, _)| from.starts_with("platform"))
        .flat_map(|(from, m)| m.iter().map(move |(to, why)| (from, to, why)))
        .filter(|(_, to, _)| !(to.starts_with("platform") || *to == "error" || *to == "util"))
        .collect();
    assert!(
        above.is_empty(),
        "platform may depend only on error and util: {above:?}"
    );
}

/// Where `needle` occurs in stripped code as a token sequence: `libc::`,
/// `nix::` as a path start, `unsafe` as a keyword.
fn occurrences(code: &str, needle: &str) -> usize {
    let toks = tokens(code);
    let word = needle.trim_end_matches("::");
    let is_path = needle.ends_with("::");
    (0..toks.len())
        .filter(|&i| {
            toks[i] == word
                && (!is_path || toks.get(i + 1).map(String::as_str) == Some("::"))
                && (i == 0 || toks[i - 1] != "::")
        })
        .count()
}

#[test]
fn only_platform_talks_to_the_kernel() {
    let krate = load();
    let mut bad = Vec::new();
    let mut used_allowances = BTreeSet::new();
    for (file, module, _, code) in &krate.files {
        if module.first().is_some_and(|m| m == "platform") {
            continue;
        }
        let shown = format!("src/{}", file.strip_prefix(src_dir()).unwrap().display());
        for needle in ["libc::", "nix::", "unsafe"] {
            let n = occurrences(code, needle);
            if n == 0 {
                continue;
            }
            if KERNEL_ALLOWED
                .iter()
                .any(|(f, what, _)| *f == shown && *what == needle)
            {
                used_allowances.insert((shown.clone(), needle));
            } else {
                bad.push(format!("{shown}: {n} x `{needle}`"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "only platform/ talks to the kernel; move these behind a platform function:\n{}",
        bad.join("\n")
    );
    for (f, what, why) in KERNEL_ALLOWED {
        assert!(
            used_allowances.contains(&(f.to_string(), *what)),
            "{f} no longer uses `{what}` ({why}): delete it from KERNEL_ALLOWED"
        );
    }
}

#[test]
fn the_checker_sees_cycles_and_kernel_calls() {
    // The parser itself, on small inputs: a group import, super, a comment and
    // a string that must not count, an inline test module.
    let code = strip(
        "use crate::{a::X, b::{self, Y}};\n// crate::c::Z\nlet s = \"crate::d::W\";\n\
         mod tests { use super::super::e::V; }\nfn f() { unsafe { libc::getpid() }; $crate::g::H }",
    );
    let module = vec!["m".to_string(), "n".to_string()];
    let refs = referenced_paths(&module, &code);
    let mut got: Vec<String> = refs.uses.iter().map(|p| p.join("::")).collect();
    got.sort();
    assert_eq!(got, ["a::X", "b::Y", "b::self", "m::e::V"]);
    // A re-export is a name, not a use; a bare path into a child module is
    // relative.
    let refs = referenced_paths(
        &module,
        &strip("mod k;\npub(crate) use k::{P, Q};\nfn g() { k::R::new(); }"),
    );
    let uses: Vec<String> = refs.uses.iter().map(|p| p.join("::")).collect();
    assert_eq!(uses, ["m::n::k::R::new"]);
    let names: Vec<&str> = refs.reexports.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, ["P", "Q"]);
    // A module a `use` brings in starts a crate path in code.
    let refs = referenced_paths(
        &module,
        &strip("use crate::up::{self, x};\nfn f() { up::g(); x::h(); }"),
    );
    let uses: Vec<String> = refs.uses.iter().map(|p| p.join("::")).collect();
    assert_eq!(uses, ["up::self", "up::x", "up::g", "up::x::h"]);
    let refs = referenced_paths(
        &module,
        &strip("#[cfg(test)]\nmod tests { use crate::up::X; }\nuse crate::down::Y;"),
    );
    let uses: Vec<String> = refs.uses.iter().map(|p| p.join("::")).collect();
    assert_eq!(uses, ["down::Y"]);
    assert_eq!(occurrences(&code, "unsafe"), 1);
    assert_eq!(occurrences(&code, "libc::"), 1);
    assert_eq!(occurrences(&code, "nix::"), 0);
    let mut g = Graph::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), String::new());
    }
    assert_eq!(cycles(&g), [["x", "y", "z"]]);
}
