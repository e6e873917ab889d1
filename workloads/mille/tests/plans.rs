//! mille over every real plan in `../shared/data/plans/` (read from there, never copied into
//! the repository) and every corner case: each parses, its counts equal the plan's own
//! (counted here independently from the raw JSON), its summary fits GitHub's comment limit
//! and names every destroy and replace, and its DOT graph only joins declared nodes. Broken
//! files are refused by the binary with exit 2 and one line.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The corpus of real plans: `MILLE_PLANS`, else `shared/data/plans` beside the repository
/// (where CI has it). Without one, the tests that read it say they were skipped, unless
/// `REQUIRE_PLANS=1` (set in CI) makes its absence a failure.
fn plans_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MILLE_PLANS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/plans")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("REQUIRE_PLANS").is_err(),
        "REQUIRE_PLANS is set but there is no plan corpus at {} (set MILLE_PLANS)",
        dir.display()
    );
    eprintln!(
        "skipped: no plan corpus at {} (set MILLE_PLANS)",
        dir.display()
    );
    None
}

fn plan_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

/// The counts by action, from the raw JSON (`actions` joined as the spec names them).
fn oracle_counts(v: &serde_json::Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for rc in v["resource_changes"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = rc["change"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let key = match actions.as_slice() {
            ["delete", "create"] | ["create", "delete"] => "replace".to_string(),
            [] => "no-op".to_string(),
            one => one.join("+"),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[test]
fn every_real_plan_parses_counts_right_and_fits_a_comment() {
    let Some(dir) = plans_dir() else { return };
    let files = plan_files(&dir);
    assert!(files.len() >= 50, "{} plans", files.len());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let plan = mille::Plan::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(plan.counts(), oracle_counts(&raw), "{name}");
        let json = mille::summary::json(&plan);
        assert_eq!(
            json["resources"],
            raw["resource_changes"].as_array().map_or(0, Vec::len),
            "{name}"
        );
        let md = mille::summary::markdown(&plan, mille::summary::COMMENT_LIMIT);
        assert!(
            md.chars().count() <= mille::summary::COMMENT_LIMIT,
            "{name}"
        );
        for c in plan.changes.iter().filter(|c| c.action.destroys()) {
            assert!(
                md.contains(&c.address),
                "{name}: {} not in the summary",
                c.address
            );
        }
        let g = mille::Graph::of(&plan);
        for include_noop in [false, true] {
            let layout = mille::layout::Layout::of(&g, include_noop);
            let svg = mille::svg::render(&g, &layout);
            let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}: {e}"));
            let drawn = doc
                .descendants()
                .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("node"))
                .count();
            assert_eq!(drawn, layout.nodes.len(), "{name}");
            check_layout(&name, &g, &layout);
        }
        let dot = mille::dot::render(&g, true);
        assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{name}");
        for &(a, b) in &g.edges {
            assert!(a < g.nodes.len() && b < g.nodes.len() && a != b, "{name}");
            assert!(dot.contains(&format!("  n{a} -> n{b};")), "{name}");
        }
    }
}

#[test]
fn references_become_edges_across_modules_and_instances() {
    let Some(dir) = plans_dir() else { return };
    let plan = mille::Plan::parse(
        &std::fs::read(dir.join("checkov__plan_nested_child_modules_with_connections.json"))
            .unwrap(),
    )
    .unwrap();
    let g = mille::Graph::of(&plan);
    let edge = |from: &str, to: &str| {
        g.edges
            .iter()
            .any(|&(a, b)| g.nodes[a].address == from && g.nodes[b].address == to)
    };
    // Within the root module, within a module, within a nested module, and through an
    // indexed reference (`aws_s3_bucket.this[0].id`) to the counted instance.
    assert!(edge(
        "aws_s3_bucket_public_access_block.root",
        "aws_s3_bucket.root_bucket"
    ));
    assert!(edge(
        "module.s3_module.module.s3_submodule.aws_s3_bucket_public_access_block.submodule_bucket",
        "module.s3_module.module.s3_submodule.aws_s3_bucket.submodule_bucket"
    ));
    assert!(edge(
        "module.s3_bucket.aws_s3_bucket_acl.this[0]",
        "module.s3_bucket.aws_s3_bucket.this[0]"
    ));
    // Nothing joins two modules that do not refer to each other.
    assert!(!edge(
        "module.s3_module.aws_s3_bucket_public_access_block.module_bucket",
        "aws_s3_bucket.root_bucket"
    ));
}

#[test]
fn deposed_objects_are_their_own_nodes() {
    let Some(dir) = plans_dir() else { return };
    let plan = mille::Plan::parse(
        &std::fs::read(dir.join("robert-consulting__terraform-plan.json")).unwrap(),
    )
    .unwrap();
    let same: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.address == "null_resource.build_lambda_package")
        .collect();
    assert_eq!(same.len(), 4);
    let keys: std::collections::BTreeSet<_> = same.iter().map(|c| c.key()).collect();
    assert_eq!(keys.len(), 4, "(address, deposed) is unique");
    assert_eq!(same.iter().filter(|c| c.deposed.is_some()).count(), 3);
}

#[test]
fn a_tight_limit_trims_whole_sections_and_says_so() {
    let Some(dir) = plans_dir() else { return };
    let plan = mille::Plan::parse(
        &std::fs::read(dir.join("cloud-native-devops-platform__infra_plan.json")).unwrap(),
    )
    .unwrap();
    let full = mille::summary::markdown(&plan, mille::summary::COMMENT_LIMIT);
    let small = mille::summary::markdown(&plan, 3_000);
    assert!(
        full.chars().count() > 3_000,
        "the plan's summary is long enough to trim"
    );
    assert!(small.chars().count() <= 3_000);
    assert!(small.contains("sections left out to fit"), "{small}");
    assert!(small.starts_with("### Terraform plan: "));
    assert_eq!(
        small.matches("<details>").count(),
        small.matches("</details>").count()
    );
}

/// The binary, with a render cache of this test process's own (not the user's).
fn mille(args: &[&str]) -> std::process::Output {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    Command::new(env!("CARGO_BIN_EXE_mille"))
        .args(args)
        .env("MILLE_CACHE_DIR", cache.path())
        .output()
        .unwrap()
}

#[test]
fn corner_cases_decode_or_are_refused_with_one_line() {
    let Some(root) = plans_dir() else { return };
    let dir = root.join("corner-cases");
    let mut seen = 0;
    for f in plan_files(&dir) {
        seen += 1;
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let o = mille(&["summary", "--json", f.to_str().unwrap()]);
        if name.contains("INVALID") {
            assert_eq!(o.status.code(), Some(2), "{name}: {o:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
            assert!(err.starts_with("mille: "), "{name}: {err}");
            assert!(o.stdout.is_empty(), "{name}");
        } else {
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(v["resources"].as_u64().unwrap() >= 2, "{name}: {v}");
        }
    }
    assert_eq!(seen, 7);
    // UTF-16 decodes to the same counts the file's table gives.
    let o = mille(&[
        "summary",
        "--json",
        dir.join("aws-kubernetes-cluster__plan.utf16le.json")
            .to_str()
            .unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"resources": 38, "counts": {"create": 37, "read": 1}})
    );
}

#[test]
fn bad_input_is_refused_with_a_reason_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases: [(&str, &[u8], &str); 6] = [
        ("empty.json", b"", "empty"),
        ("text.json", b"hello", "not JSON"),
        (
            "truncated.json",
            br#"{"format_version":"1.2","resource_changes":[{"#,
            "truncated",
        ),
        (
            "v9.json",
            br#"{"format_version":"9.0","resource_changes":[]}"#,
            "not supported",
        ),
        ("array.json", b"[1,2]", "not a Terraform plan"),
        ("binary.json", &[0xC3, 0x28, 0xA0, 0xA1], "not UTF-8"),
    ];
    for (name, bytes, says) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = mille(&["summary", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{name}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
    // A plan with no changes is valid.
    let p = dir.join("none.json");
    std::fs::write(
        &p,
        br#"{"format_version":"1.2","terraform_version":"1.9.0"}"#,
    )
    .unwrap();
    let o = mille(&["summary", p.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("No changes"));
}

#[test]
fn render_writes_the_summary_and_the_graph_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(plans) = plans_dir() else { return };
    let plan = std::fs::read(plans.join("terraform-json__deep_module.json")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mille"))
        .args(["render", "-", "--no-cache", "--format", "dot", "--out"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &plan).unwrap();
    assert!(child.wait().unwrap().success());
    let svg = std::fs::read_to_string(dir.join("graph.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(
        doc.descendants()
            .any(|n| n.attribute("class") == Some("module")),
        "modules are boxes: {svg}"
    );
    let dot = std::fs::read_to_string(dir.join("graph.dot")).unwrap();
    assert!(dot.starts_with("digraph plan {"), "{dot}");
    assert!(
        dot.contains("subgraph cluster_"),
        "modules are clusters: {dot}"
    );
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.starts_with("### Terraform plan: "));
}

/// No two resources overlap; each lies inside its module's box (when that is drawn); sibling
/// module boxes do not overlap; everything lies inside the drawing.
fn check_layout(name: &str, g: &mille::Graph, l: &mille::layout::Layout) {
    let rects: Vec<_> = l.nodes.iter().collect();
    for (k, (i, a)) in rects.iter().enumerate() {
        assert!(
            a.x >= 0.0 && a.y >= 0.0 && a.x + a.w <= l.width + 0.01 && a.y + a.h <= l.height + 0.01,
            "{name}: {i} outside"
        );
        for (j, b) in &rects[k + 1..] {
            assert!(!a.overlaps(b), "{name}: nodes {i} and {j} overlap");
        }
        if let Some(m) = &g.nodes[**i].module {
            if let Some(mb) = l.modules.iter().find(|b| &b.address == m && !b.collapsed) {
                let r = mb.rect;
                assert!(
                    a.x >= r.x
                        && a.y >= r.y
                        && a.x + a.w <= r.x + r.w + 0.01
                        && a.y + a.h <= r.y + r.h + 0.01,
                    "{name}: {} outside its module box",
                    g.nodes[**i].address
                );
            }
        }
    }
    for (k, a) in l.modules.iter().enumerate() {
        for b in &l.modules[k + 1..] {
            let nested = b.address.starts_with(&format!("{}.", a.address))
                || a.address.starts_with(&format!("{}.", b.address));
            if !nested {
                assert!(
                    !a.rect.overlaps(&b.rect),
                    "{name}: {} and {} overlap",
                    a.address,
                    b.address
                );
            }
        }
    }
}

/// Addresses are the user's strings (instance keys can hold anything): they reach the SVG
/// only as escaped text.
#[test]
fn instance_keys_with_markup_stay_text_in_the_svg() {
    let plan_json = serde_json::json!({
        "format_version": "1.2",
        "resource_changes": [{
            "address": "aws_s3_bucket.b[\"<script>alert('x')</script> & \\\" ]\"]",
            "mode": "managed", "type": "aws_s3_bucket", "name": "b",
            "index": "<script>alert('x')</script> & \" ]",
            "change": {"actions": ["create"]}
        }]
    });
    let plan = mille::Plan::parse(plan_json.to_string().as_bytes()).unwrap();
    let g = mille::Graph::of(&plan);
    let svg = mille::svg::render(&g, &mille::layout::Layout::of(&g, false));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(
        !doc.descendants().any(|n| n.has_tag_name("script")),
        "{svg}"
    );
    let title = doc
        .descendants()
        .find(|n| n.has_tag_name("title"))
        .unwrap()
        .text()
        .unwrap();
    assert!(title.contains("<script>alert('x')</script> & "), "{title}");
}

/// The summaries of a few plans, as reviewed: any change to the wording or layout shows up
/// here. `UPDATE_SNAPSHOTS=1 cargo test -p mille` rewrites them after a deliberate change.
#[test]
fn summaries_match_their_snapshots() {
    let Some(dir) = plans_dir() else { return };
    for (plan, snap) in [
        (
            "corner-cases/terraform-visual__aws-s3_trimmed.json",
            "aws-s3_trimmed.md",
        ),
        ("terraform-json__basic.json", "terraform-json_basic.md"),
        (
            "robert-consulting__terraform-plan.json",
            "robert-consulting.md",
        ),
    ] {
        let p = mille::Plan::parse(&std::fs::read(dir.join(plan)).unwrap()).unwrap();
        let got = mille::summary::markdown(&p, mille::summary::COMMENT_LIMIT);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(snap);
        if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{snap} missing"));
        assert_eq!(got, want, "{plan}: the summary changed (see {snap})");
    }
}

/// The render cache through the binary: a second render of the same plan reads the first
/// one's outputs back; `--no-cache` neither reads nor writes it; `cache stats` and `cache
/// prune` see what is there.
#[test]
fn a_second_render_comes_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let plan = tmp.path().join("plan.json");
    std::fs::write(&plan, mille::synth::plan(200, 4, 300).to_string()).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mille"))
            .args(args)
            .env("MILLE_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let stats = |run: &dyn Fn(&[&str]) -> String| -> serde_json::Value {
        serde_json::from_str(&run(&["cache", "stats", "--json"])).unwrap()
    };
    let p = plan.to_str().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    run(&["render", p, "--no-cache", "--out", a.to_str().unwrap()]);
    assert_eq!(stats(&run)["files"], 0, "--no-cache writes nothing");
    run(&["render", p, "--out", b.to_str().unwrap()]);
    assert_eq!(stats(&run)["files"], 3, "svg, html, summary");
    run(&["render", p, "--out", c.to_str().unwrap()]);
    assert_eq!(stats(&run)["files"], 3, "the second render was a hit");
    for f in ["graph.svg", "graph.html", "summary.md"] {
        let fresh = std::fs::read(a.join(f)).unwrap();
        assert_eq!(
            std::fs::read(c.join(f)).unwrap(),
            fresh,
            "{f} from the cache is the same"
        );
    }
    // `summary` answers from the same cache: the rendering's summary.md, read (its file is
    // the same file afterwards: a write would have replaced it by a new one).
    let inodes = || -> std::collections::BTreeMap<PathBuf, u64> {
        use std::os::unix::fs::MetadataExt as _;
        let mut out = std::collections::BTreeMap::new();
        let mut todo = vec![cache.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    todo.push(e.path());
                } else if !e.path().ends_with("lock") && !e.path().ends_with("state.json") {
                    out.insert(e.path(), m.ino());
                }
            }
        }
        out
    };
    let before = inodes();
    assert_eq!(
        run(&["summary", p]).as_bytes(),
        std::fs::read(a.join("summary.md")).unwrap(),
        "the summary is the rendering's"
    );
    assert_eq!(
        inodes(),
        before,
        "read from the cache, not computed and written again"
    );
    let counts = run(&["summary", "--json", p]);
    assert_eq!(stats(&run)["files"], 4, "the counts are kept too");
    assert_eq!(run(&["summary", "--json", p]), counts);
    assert_eq!(run(&["summary", "--json", "--no-cache", p]), counts);
    let out = run(&["cache", "prune", "--max-size", "0"]);
    assert!(out.starts_with("removed 4 files"), "{out}");
    assert_eq!(stats(&run)["files"], 0);
    let o = Command::new(env!("CARGO_BIN_EXE_mille"))
        .args(["cache", "prune", "--max-age", "soon"])
        .env("MILLE_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
