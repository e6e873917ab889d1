//! `periodic index`, `patterns` and `clones` on small corpora written here: renamed copies are
//! one pattern and one clone group; removing a copy removes both; every language is parsed;
//! a second run parses nothing, a touched file is hashed but not parsed; `.gitignore` is
//! respected; a damaged index is rebuilt, never a crash.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn periodic(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_periodic"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn index(dir: &Path) -> Value {
    let (code, out, err) = periodic(&["index", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn patterns(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "patterns",
        "--index",
        dir.to_str().unwrap(),
        "--json",
        "--limit",
        "0",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = periodic(&args);
    assert_eq!(code, 0, "{err}");
    lines(&out)
}

fn clones(dir: &Path) -> Vec<Value> {
    let (code, out, err) = periodic(&[
        "clones",
        "--index",
        dir.to_str().unwrap(),
        "--json",
        "--limit",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    lines(&out)
}

const ORIGINAL: &str = r#"
pub fn total_price(items: &[Item], tax: f64) -> f64 {
    let mut sum = 0.0;
    for item in items {
        if item.quantity > 0 {
            sum += item.price * item.quantity as f64;
        } else {
            log::warn!("empty line {}", item.name);
        }
    }
    let discount = if sum > 100.0 { sum * 0.05 } else { 0.0 };
    (sum - discount) * (1.0 + tax)
}
"#;

/// The same function with every name and constant changed.
const RENAMED: &str = r#"
pub fn invoice_amount(lines: &[Line], vat: f64) -> f64 {
    let mut acc = 1.5;
    for l in lines {
        if l.count > 7 {
            acc += l.cost * l.count as f64;
        } else {
            log::warn!("skipped {}", l.label);
        }
    }
    let rebate = if acc > 250.0 { acc * 0.1 } else { 2.0 };
    (acc - rebate) * (3.0 + vat)
}
"#;

const OTHER: &str = r#"
pub fn parse_header(bytes: &[u8]) -> Option<(u16, u16)> {
    let version = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
    let flags = u16::from_le_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    Some((version, flags))
}
"#;

fn function_patterns(dir: &Path) -> Vec<Value> {
    patterns(dir, &["--kind", "function"])
}

#[test]
fn renamed_copies_are_one_pattern_and_one_clone_and_go_when_a_copy_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.rs"), format!("{ORIGINAL}\n{OTHER}")).unwrap();
    std::fs::write(dir.path().join("src/b.rs"), RENAMED).unwrap();
    let r = index(dir.path());
    assert_eq!(r["files"], 2);
    assert_eq!(r["parsed"], 2);

    let f = function_patterns(dir.path());
    assert_eq!(f.len(), 1, "one function pattern: {f:?}");
    assert_eq!(f[0]["count"], 2);
    assert_eq!(f[0]["files"], 2);
    assert_eq!(f[0]["language"], "rust");
    let files: Vec<&str> = f[0]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["src/a.rs", "src/b.rs"]);
    assert_eq!(f[0]["locations"][0]["start_line"], 2, "{f:?}");
    // Its inner parts, seen only inside it, are folded into it: the table shows the function.
    let all = patterns(dir.path(), &[]);
    assert!(all.iter().all(|p| p["count"] == 2), "{all:?}");
    assert_eq!(all[0]["kind"], "function", "biggest first: {all:?}");

    let c = clones(dir.path());
    assert_eq!(c.len(), 1, "one clone group: {c:?}");
    let regions = c[0]["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0]["file"], "src/a.rs");
    assert_eq!(regions[1]["file"], "src/b.rs");
    assert!(
        regions[0]["end_line"].as_u64().unwrap() - regions[0]["start_line"].as_u64().unwrap() >= 8
    );

    // The copy is rewritten into something else: the pattern and the clone go.
    std::fs::write(
        dir.path().join("src/b.rs"),
        OTHER.replace("parse_header", "read_header"),
    )
    .unwrap();
    let r = index(dir.path());
    assert_eq!(r["parsed"], 1, "only the edited file is parsed: {r}");
    assert!(
        function_patterns(dir.path()).iter().all(|p| {
            p["locations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["start_line"] != 2 || l["file"] != "src/a.rs")
        }),
        "the total_price pattern is gone"
    );
    let c = clones(dir.path());
    assert!(
        c.iter().all(|g| g["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["start_line"] != 2)),
        "the clone of total_price is gone: {c:?}"
    );
}

#[test]
fn a_second_run_parses_nothing_and_a_touched_file_is_only_hashed() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(
            dir.path().join(format!("f{i}.rs")),
            if i % 2 == 0 { ORIGINAL } else { OTHER },
        )
        .unwrap();
    }
    let first = index(dir.path());
    assert_eq!(first["parsed"], 20);
    assert_eq!(first["written"], true);
    let again = index(dir.path());
    assert_eq!(again["parsed"], 0, "{again}");
    assert_eq!(again["hashed"], 0, "{again}");
    assert_eq!(again["written"], false, "nothing changed, nothing written");
    assert_eq!(again["patterns"], first["patterns"]);
    assert_eq!(again["clones"], first["clones"]);
    // Same bytes, new time: read and hashed, not parsed.
    let f = std::fs::File::options()
        .write(true)
        .open(dir.path().join("f3.rs"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let touched = index(dir.path());
    assert_eq!(touched["parsed"], 0, "{touched}");
    assert_eq!(touched["hashed"], 1, "{touched}");
    assert_eq!(touched["patterns"], first["patterns"]);
    // A file removed leaves the index.
    std::fs::remove_file(dir.path().join("f4.rs")).unwrap();
    let removed = index(dir.path());
    assert_eq!(removed["removed"], 1);
    assert_eq!(removed["files"], 19);
}

#[test]
fn every_language_is_parsed_and_its_renamed_copies_found() {
    let sources: [(&str, &str, &str); 6] = [
        ("a.py", "def area(shape, scale):\n    total = 0\n    for part in shape.parts:\n        if part.visible:\n            total += part.width * part.height * scale\n        else:\n            print('hidden', part.name)\n    return total\n", "def volume(body, factor):\n    acc = 5\n    for p in body.pieces:\n        if p.shown:\n            acc += p.w * p.h * factor\n        else:\n            print('gone', p.label)\n    return acc\n"),
        ("a.js", "function area(shape, scale) {\n  let total = 0;\n  for (const part of shape.parts) {\n    if (part.visible) {\n      total += part.width * part.height * scale;\n    } else {\n      console.log('hidden', part.name);\n    }\n  }\n  return total;\n}\n", "function volume(body, factor) {\n  let acc = 5;\n  for (const p of body.pieces) {\n    if (p.shown) {\n      acc += p.w * p.h * factor;\n    } else {\n      console.log('gone', p.label);\n    }\n  }\n  return acc;\n}\n"),
        ("a.ts", "function area(shape: Shape, scale: number): number {\n  let total = 0;\n  for (const part of shape.parts) {\n    if (part.visible) {\n      total += part.width * part.height * scale;\n    } else {\n      console.log('hidden', part.name);\n    }\n  }\n  return total;\n}\n", "function volume(body: Body, factor: number): number {\n  let acc = 5;\n  for (const p of body.pieces) {\n    if (p.shown) {\n      acc += p.w * p.h * factor;\n    } else {\n      console.log('gone', p.label);\n    }\n  }\n  return acc;\n}\n"),
        ("a.tsx", "function Area(props: Props) {\n  let total = 0;\n  for (const part of props.parts) {\n    if (part.visible) {\n      total += part.width * part.height;\n    }\n  }\n  return <div className=\"area\">{total}</div>;\n}\n", "function Volume(q: Q) {\n  let acc = 5;\n  for (const p of q.pieces) {\n    if (p.shown) {\n      acc += p.w * p.h;\n    }\n  }\n  return <div className=\"vol\">{acc}</div>;\n}\n"),
        ("a.go", "package a\n\nfunc Area(shape Shape, scale int) int {\n\ttotal := 0\n\tfor _, part := range shape.Parts {\n\t\tif part.Visible {\n\t\t\ttotal += part.Width * part.Height * scale\n\t\t} else {\n\t\t\tfmt.Println(\"hidden\", part.Name)\n\t\t}\n\t}\n\treturn total\n}\n", "package a\n\nfunc Volume(body Body, factor int) int {\n\tacc := 5\n\tfor _, p := range body.Pieces {\n\t\tif p.Shown {\n\t\t\tacc += p.W * p.H * factor\n\t\t} else {\n\t\t\tfmt.Println(\"gone\", p.Label)\n\t\t}\n\t}\n\treturn acc\n}\n"),
        ("a.rs", ORIGINAL, RENAMED),
    ];
    for (name, one, two) in sources {
        let dir = tempfile::tempdir().unwrap();
        let (stem, ext) = name.split_once('.').unwrap();
        std::fs::write(dir.path().join(name), one).unwrap();
        std::fs::write(dir.path().join(format!("{stem}2.{ext}")), two).unwrap();
        let r = index(dir.path());
        assert_eq!(r["parsed"], 2, "{name}: {r}");
        let f = function_patterns(dir.path());
        assert_eq!(f.len(), 1, "{name}: one function pattern, renamed: {f:?}");
        assert_eq!(f[0]["count"], 2, "{name}");
    }
}

#[test]
fn gitignored_and_hidden_files_are_not_indexed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitignore"), "generated/\n").unwrap();
    std::fs::create_dir_all(dir.path().join("generated")).unwrap();
    std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
    std::fs::write(dir.path().join("generated/g.rs"), ORIGINAL).unwrap();
    std::fs::write(dir.path().join(".hidden/h.rs"), ORIGINAL).unwrap();
    std::fs::write(dir.path().join("kept.rs"), ORIGINAL).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not code").unwrap();
    let r = index(dir.path());
    assert_eq!(r["files"], 1, "{r}");
    assert!(patterns(dir.path(), &["--kind", "function"]).is_empty());
}

#[test]
fn a_damaged_index_is_rebuilt_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rs"), ORIGINAL).unwrap();
    std::fs::write(dir.path().join("b.rs"), RENAMED).unwrap();
    let first = index(dir.path());
    let file = dir.path().join(".periodic/index");
    let good = std::fs::read(&file).unwrap();
    let damage: [(&str, Vec<u8>); 4] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("a byte flipped", {
            let mut b = good.clone();
            let at = b.len() - 9;
            b[at] ^= 0x40;
            b
        }),
        ("empty", Vec::new()),
        ("another file", b"PK\x03\x04 not an index at all".to_vec()),
    ];
    for (what, bytes) in damage {
        std::fs::write(&file, &bytes).unwrap();
        // A query checks the header and the section table only (constant time): a file cut
        // short or not an index is refused with a reason; damage inside may give odd
        // answers, never a crash.
        let (code, _, err) = periodic(&["patterns", "--index", dir.path().to_str().unwrap()]);
        if what == "a byte flipped" {
            assert!(code == 0 || code == 1, "{what}: {code} {err}");
        } else {
            assert_eq!(code, 1, "{what}: {err}");
            assert!(err.contains("rebuild"), "{what}: {err}");
        }
        // The indexer checks every byte: it rebuilds the index and says why.
        let (code, out, err) = periodic(&["index", dir.path().to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{what}: {err}");
        assert!(err.contains("rebuilt the index"), "{what}: {err}");
        let r: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(r["parsed"], 2, "{what}");
        assert_eq!(r["patterns"], first["patterns"], "{what}");
    }
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let (code, _, err) = periodic(&["index", "/no/such/folder"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = periodic(&["patterns", "--index", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "no index yet: {err}");
    assert!(err.contains("periodic index"), "{err}");
    let (code, _, err) = periodic(&["patterns", "--kind", "nonsense"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected one of"), "{err}");
}

#[test]
fn match_finds_renamed_copies_exactly_and_edited_ones_by_similarity() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rs"), ORIGINAL).unwrap();
    std::fs::write(dir.path().join("b.rs"), RENAMED).unwrap();
    // A copy with one statement added: not the same shape, mostly the same tokens.
    let edited = ORIGINAL.replace(
        "    let discount",
        "    tracing::debug!(\"summing {}\", sum);\n    let discount",
    );
    std::fs::write(dir.path().join("c.rs"), edited).unwrap();
    std::fs::write(dir.path().join("d.rs"), OTHER).unwrap();
    index(dir.path());
    let root = dir.path().to_str().unwrap();
    let run = |args: &[&str]| -> Value {
        let mut all = vec!["match", "--index", root, "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = periodic(&all);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let m = run(&["b.rs:2"]);
    assert_eq!(m["probe"]["kind"], "function", "{m}");
    let found = m["matches"].as_array().unwrap();
    let exact: Vec<&str> = found
        .iter()
        .filter(|f| f["exact"] == true)
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(exact, ["a.rs", "b.rs"], "{m}");
    let similar: Vec<&Value> = found.iter().filter(|f| f["exact"] == false).collect();
    assert_eq!(similar.len(), 1, "the edited copy, by its tokens: {m}");
    assert_eq!(similar[0]["file"], "c.rs");
    assert!(similar[0]["similarity"].as_f64().unwrap() >= 0.5);
    assert!(
        found.iter().all(|f| f["file"] != "d.rs"),
        "unrelated code is not similar"
    );
    // The same from a snippet in the user's own words.
    let snippet = RENAMED
        .replace("invoice_amount", "whatever")
        .replace("vat", "t");
    let m = run(&["--snippet", &snippet, "--lang", "rust"]);
    assert_eq!(
        m["matches"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["exact"] == true)
            .count(),
        2,
        "{m}"
    );
    // Code that occurs once in the index (not a pattern) is found too, renamed, from a
    // snippet (a lookup among the fingerprints kept once, not a scan of every subtree).
    let once = OTHER
        .replace("parse_header", "read_head")
        .replace("bytes", "b");
    let m = run(&["--snippet", &once, "--lang", "rust"]);
    let exact: Vec<(&str, u64)> = m["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["exact"] == true)
        .map(|f| {
            (
                f["file"].as_str().unwrap(),
                f["start_line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(exact, [("d.rs", 2)], "{m}");
    // A loop, not a whole file, is read as code inside a function.
    let m = run(&[
        "--snippet",
        "for item in items { if item.quantity > 0 { sum += item.price * item.quantity as f64; } else { log::warn!(\"x {}\", item.name); } }",
        "--lang",
        "rust",
    ]);
    assert!(
        m["matches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "b.rs"),
        "the loop of the renamed copy: {m}"
    );
    // Bad input: one line, exit 2.
    for bad in [
        &["nope"][..],
        &["a.rs:zero"],
        &["--snippet", "x", "--lang", "cobol"],
        &["a.rs:2", "--min-similarity", "3"],
    ] {
        let mut all = vec!["match", "--index", root];
        all.extend_from_slice(bad);
        let (code, _, err) = periodic(&all);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{bad:?}: {err}");
    }
}

/// Every node of a tree, counted by recursion over children (independent of the cursor walk
/// `periodic ceiling --visit` does).
fn count_nodes(node: tree_sitter::Node) -> u64 {
    1 + (0..node.child_count())
        .filter_map(|i| node.child(i))
        .map(count_nodes)
        .sum::<u64>()
}

#[test]
fn the_parse_ceiling_reads_the_files_index_reads_and_visits_every_node() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitignore"), "skip/\n").unwrap();
    std::fs::create_dir_all(dir.path().join("skip")).unwrap();
    std::fs::write(dir.path().join("skip/s.rs"), ORIGINAL).unwrap();
    std::fs::write(dir.path().join("a.rs"), ORIGINAL).unwrap();
    let py = "def f(x):\n    return [y * 2 for y in x if y]\n";
    std::fs::write(dir.path().join("b.py"), py).unwrap();
    let (code, out, err) = periodic(&["ceiling", dir.path().to_str().unwrap(), "--visit"]);
    assert_eq!(code, 0, "{err}");
    let c: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["files"], 2, "{c}");
    assert_eq!(c["bytes"], (ORIGINAL.len() + py.len()) as u64, "{c}");
    let mut parser = tree_sitter::Parser::new();
    let mut expected = 0;
    for (lang, text) in [
        (periodic::Lang::Rust, ORIGINAL),
        (periodic::Lang::Python, py),
    ] {
        parser.set_language(&lang.grammar()).unwrap();
        expected += count_nodes(parser.parse(text, None).unwrap().root_node());
    }
    assert_eq!(c["nodes"], expected, "{c}");
    assert_eq!(index(dir.path())["files"], c["files"]);
}
