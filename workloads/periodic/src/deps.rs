//! The dependency graph: which file imports which, from the import statements the parser
//! finds (Rust `use` and `mod`, Python `import` and `from ... import`, JavaScript and
//! TypeScript `import ... from` and `export ... from`, Go import specs), resolved to files of
//! the index by each language's own rules, approximately: Rust paths from the crate's `src`
//! folder (`crate::a::b` is `src/a/b.rs`, `src/a/b/mod.rs` or `src/a.rs`) and `mod x;` beside
//! the file; Python dotted names from the index's root or, for relative ones, the file's
//! folder; JavaScript relative specifiers with their usual extensions and `index` files; Go
//! import paths by the folder they end with.

use crate::lang::Lang;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The module named by an import statement's text, as written (`crate::a::b`, `.x.y`,
/// `./util`, `example.com/m/pkg`), or several for one statement (`import a, b`).
pub fn modules_of(lang: Lang, text: &str) -> Vec<String> {
    let text = text.trim();
    match lang {
        Lang::Rust => {
            if let Some(rest) = text
                .strip_prefix("mod ")
                .or_else(|| text.strip_prefix("pub mod "))
                .or_else(|| text.strip_prefix("pub(crate) mod "))
            {
                // Only `mod x;` names a file; `mod x { ... }` is inline.
                return rest
                    .strip_suffix(';')
                    .map(|m| vec![format!("mod {}", m.trim())])
                    .unwrap_or_default();
            }
            let Some(at) = text.find("use ") else {
                return Vec::new();
            };
            let path = text[at + 4..].trim_end_matches(';').trim();
            let path = path
                .split('{')
                .next()
                .unwrap_or(path)
                .trim_end_matches("::");
            let path = path.split(" as ").next().unwrap_or(path);
            vec![path.trim().to_string()]
        }
        Lang::Python => {
            if let Some(rest) = text.strip_prefix("from ") {
                return rest
                    .split_whitespace()
                    .next()
                    .map(|m| vec![m.to_string()])
                    .unwrap_or_default();
            }
            text.strip_prefix("import ")
                .map(|rest| {
                    rest.split(',')
                        .filter_map(|m| m.split_whitespace().next())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        }
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => {
            // The quoted specifier after `from` (or of a bare `import "x"`).
            let after = text.rsplit_once(" from ").map_or(text, |(_, s)| s);
            quoted(after).into_iter().collect()
        }
        Lang::Go => quoted(text).into_iter().collect(),
    }
}

fn quoted(s: &str) -> Option<String> {
    let start = s.find(['"', '\'', '`'])?;
    let q = s[start..].chars().next()?;
    let rest = &s[start + 1..];
    let end = rest.find(q)?;
    Some(rest[..end].to_string())
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The files of `files` that `module`, imported by `from` (a path of `files`), names.
pub fn resolve(files: &HashSet<String>, from: &str, lang: Lang, module: &str) -> Vec<String> {
    let dir = parent(from);
    let mut candidates: Vec<String> = Vec::new();
    match lang {
        Lang::Rust => {
            if let Some(m) = module.strip_prefix("mod ") {
                // Beside the file (or in its own folder for a non-root module file).
                let stem = from
                    .rsplit('/')
                    .next()
                    .unwrap_or(from)
                    .trim_end_matches(".rs");
                let base = if matches!(stem, "lib" | "main" | "mod") {
                    dir.to_string()
                } else {
                    join(dir, stem)
                };
                candidates.push(join(&base, &format!("{m}.rs")));
                candidates.push(join(&base, &format!("{m}/mod.rs")));
                candidates.push(join(dir, &format!("{m}.rs")));
            } else {
                let segs: Vec<&str> = module.split("::").collect();
                let (root, rest): (String, &[&str]) = match segs.first() {
                    Some(&"crate") => {
                        // The crate's src folder: the nearest `src` above the file.
                        let mut d = dir;
                        while !d.is_empty() && !d.ends_with("src") {
                            d = parent(d);
                        }
                        (d.to_string(), &segs[1..])
                    }
                    Some(&"super") => (parent(dir).to_string(), &segs[1..]),
                    Some(&"self") => (dir.to_string(), &segs[1..]),
                    _ => (String::new(), &[][..]),
                };
                // The longest prefix of the path that is a file: `a::b::C` may be in a/b.rs.
                for n in (1..=rest.len()).rev() {
                    let p = rest[..n].join("/");
                    candidates.push(join(&root, &format!("{p}.rs")));
                    candidates.push(join(&root, &format!("{p}/mod.rs")));
                }
            }
        }
        Lang::Python => {
            let dots = module.chars().take_while(|c| *c == '.').count();
            let name = module[dots..].replace('.', "/");
            let base = if dots == 0 {
                String::new()
            } else {
                let mut d = dir.to_string();
                for _ in 1..dots {
                    d = parent(&d).to_string();
                }
                d
            };
            candidates.push(join(&base, &format!("{name}.py")));
            candidates.push(join(&base, &format!("{name}/__init__.py")));
            if dots == 0 {
                // Also relative to the importing file's folder (scripts, src layouts).
                candidates.push(join(dir, &format!("{name}.py")));
            }
        }
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => {
            if module.starts_with('.') {
                let base = join(dir, module);
                candidates.push(base.clone());
                for ext in ["ts", "tsx", "js", "jsx", "mjs", "cjs"] {
                    candidates.push(format!("{base}.{ext}"));
                    candidates.push(format!("{base}/index.{ext}"));
                }
                // `./x.js` written for a TypeScript source `x.ts`.
                if let Some(stem) = base.strip_suffix(".js") {
                    candidates.push(format!("{stem}.ts"));
                    candidates.push(format!("{stem}.tsx"));
                }
            }
        }
        Lang::Go => {
            // Every .go file of a folder whose path ends with the import path's tail.
            let tail = module.trim_matches('/');
            let mut out: Vec<String> = files
                .iter()
                .filter(|f| {
                    f.ends_with(".go")
                        && !f.ends_with("_test.go")
                        && {
                            let d = parent(f);
                            d == tail
                                || d.ends_with(&format!("/{tail}"))
                                || tail.ends_with(&format!("/{d}")) && !d.is_empty()
                        }
                        && parent(f) != dir
                })
                .cloned()
                .collect();
            out.sort();
            return out;
        }
    }
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|c| c != from && files.contains(c))
        .filter(|c| seen.insert(c.clone()))
        .take(1)
        .collect()
}

/// Who imports whom: file → the files that import it.
pub fn dependents(
    files: &HashSet<String>,
    imports: &BTreeMap<String, (Lang, Vec<String>)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, (lang, modules)) in imports {
        for m in modules {
            for target in resolve(files, from, *lang, m) {
                out.entry(target).or_default().insert(from.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[&str]) -> HashSet<String> {
        files.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn imports_resolve_to_files_per_language() {
        let files = set(&[
            "src/lib.rs",
            "src/store/mod.rs",
            "src/store/disk.rs",
            "src/util.rs",
            "app/main.py",
            "app/models/user.py",
            "app/helpers.py",
            "web/src/app.ts",
            "web/src/util/index.ts",
            "web/src/api.js",
            "cmd/main.go",
            "internal/db/db.go",
        ]);
        let r = |from: &str, lang: Lang, text: &str| -> Vec<String> {
            modules_of(lang, text)
                .iter()
                .flat_map(|m| resolve(&files, from, lang, m))
                .collect()
        };
        assert_eq!(r("src/lib.rs", Lang::Rust, "mod util;"), ["src/util.rs"]);
        assert_eq!(
            r("src/lib.rs", Lang::Rust, "pub mod store;"),
            ["src/store/mod.rs"]
        );
        assert_eq!(
            r(
                "src/lib.rs",
                Lang::Rust,
                "use crate::store::disk::{Disk, open};"
            ),
            ["src/store/disk.rs"]
        );
        assert_eq!(
            r("src/store/disk.rs", Lang::Rust, "use super::util::x;"),
            ["src/util.rs"]
        );
        assert_eq!(
            r("src/lib.rs", Lang::Rust, "use std::collections::HashMap;"),
            Vec::<String>::new()
        );
        assert_eq!(
            r(
                "app/main.py",
                Lang::Python,
                "from app.models.user import User"
            ),
            ["app/models/user.py"]
        );
        assert_eq!(
            r("app/main.py", Lang::Python, "import helpers, os"),
            ["app/helpers.py"]
        );
        assert_eq!(
            r(
                "app/models/user.py",
                Lang::Python,
                "from ..helpers import h"
            ),
            ["app/helpers.py"]
        );
        assert_eq!(
            r(
                "web/src/app.ts",
                Lang::TypeScript,
                "import { a } from './util';"
            ),
            ["web/src/util/index.ts"]
        );
        assert_eq!(
            r(
                "web/src/app.ts",
                Lang::TypeScript,
                "import api from \"./api.js\";"
            ),
            ["web/src/api.js"]
        );
        assert_eq!(
            r(
                "web/src/app.ts",
                Lang::TypeScript,
                "import React from 'react';"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            r("cmd/main.go", Lang::Go, "\"example.com/m/internal/db\""),
            ["internal/db/db.go"]
        );
    }
}
