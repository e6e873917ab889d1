//! `graph.html` in headless Chromium: a 1,000-change plan opens on its overview (modules
//! collapsed, counted) placed exactly where `graph.svg` has them, with no console error; a
//! real click on a collapsed module expands it in place (its resources inside its frame, its
//! neighbours pushed aside, nothing overlapping), a click on its label collapses it again;
//! the action filter hides what it should; markup in the plan's strings stays text.
//! Screenshots go to `target/test-artifacts/mille/`. Needs Chromium (see the `weir-browser`
//! crate: without one the test says it was skipped, unless REQUIRE_BROWSER_TEST is set).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn render(plan: &str, out: &Path) {
    let dir = out.parent().unwrap();
    let plan_path = dir.join("plan.json");
    std::fs::write(&plan_path, plan).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mille"))
        .args(["render", "--no-cache", plan_path.to_str().unwrap(), "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/mille")
}

/// Module boxes of graph.svg: address → [x, y, w, h].
fn svg_boxes(svg: &str) -> BTreeMap<String, [f64; 4]> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let mut out = BTreeMap::new();
    for g in doc
        .descendants()
        .filter(|n| n.attribute("data-module").is_some())
    {
        if !g.attribute("class").unwrap_or("").starts_with("module") {
            continue;
        }
        let r = g.children().find(|c| c.has_tag_name("rect")).unwrap();
        let f = |a: &str| r.attribute(a).unwrap().parse::<f64>().unwrap();
        out.insert(
            g.attribute("data-module").unwrap().to_string(),
            [f("x"), f("y"), f("width"), f("height")],
        );
    }
    out
}

/// The page's module boxes as drawn: address → [x, y, w, h] in the drawing's coordinates.
const PAGE_BOXES: &str = r#"Object.fromEntries([...document.querySelectorAll('#stage g.module:not(.gone)')].map(g => {
  const t = g.transform.baseVal.consolidate().matrix, f = g.querySelector('.frame');
  return [g.dataset.module, [t.e, t.f, f.width.baseVal.value, f.height.baseVal.value]];
}))"#;

fn boxes_of(v: &Value) -> BTreeMap<String, [f64; 4]> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, r)| {
            let r: Vec<f64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (k.clone(), [r[0], r[1], r[2], r[3]])
        })
        .collect()
}

fn overlap(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]
}

#[test]
fn a_big_plan_opens_collapsed_and_a_module_expands_in_place_on_click() {
    let Some(bin) = weir_browser::required() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    render(&mille::synth::plan(1000, 20, 2000).to_string(), &out);
    let svg = std::fs::read_to_string(out.join("graph.svg")).unwrap();

    let mut b = weir_browser::Browser::launch(&bin);
    b.goto(&format!("file://{}", out.join("graph.html").display()));
    b.wait_until(
        "the overview",
        "document.querySelectorAll('#stage g.module').length > 0",
    );
    let collapsed = b.eval("document.querySelectorAll('#stage g.module.collapsed').length");
    assert_eq!(
        collapsed, 20,
        "every module starts collapsed at 1,000 changes"
    );
    let status = b.eval("document.getElementById('status').textContent");
    assert!(
        status.as_str().unwrap().ends_with("resources shown"),
        "{status}"
    );
    // The page places the overview exactly as mille's layout did for graph.svg.
    let before = boxes_of(&b.eval(PAGE_BOXES));
    let expected = svg_boxes(&svg);
    assert_eq!(before.len(), expected.len());
    for (m, r) in &expected {
        let p = before.get(m).unwrap();
        for k in 0..4 {
            assert!(
                (p[k] - r[k]).abs() < 0.05,
                "{m}: page {p:?}, graph.svg {r:?}"
            );
        }
    }
    b.screenshot(&shots(), "overview");

    // A real click on the first collapsed module expands it where it is.
    let first = b.eval("document.querySelector('#stage g.module.collapsed').dataset.module");
    let first = first.as_str().unwrap().to_string();
    b.click("#stage g.module.collapsed .frame");
    let drawn_js = format!(
        "[...document.querySelectorAll('#stage g.node:not(.gone)')].filter(n => n.dataset.module === {first:?}).length"
    );
    b.wait_until(
        "the module's resources",
        &format!("document.querySelector('#stage g.module.expanded') && {drawn_js} >= 30"),
    );
    assert!(
        b.eval("document.getElementById('detail')").is_null(),
        "no side panel"
    );
    let after = boxes_of(&b.eval(PAGE_BOXES));
    let open = after.get(&first).unwrap();
    let was = before.get(&first).unwrap();
    assert!(
        open[2] > was[2] && open[3] > was[3],
        "{first} grew: {was:?} → {open:?}"
    );
    assert_eq!(
        [open[0], open[1]],
        [was[0], was[1]],
        "it opened where it was"
    );
    // Its neighbours moved aside: nothing overlaps, and something had to move.
    let moved = after
        .iter()
        .filter(|(m, r)| *m != &first && before.get(*m) != Some(*r))
        .count();
    assert!(moved > 0, "the modules around it made room");
    for (m, r) in &after {
        for (n, s) in &after {
            if m < n {
                assert!(!overlap(r, s), "{m} {r:?} and {n} {s:?} overlap");
            }
        }
    }
    // Its resources lie inside its frame.
    let inside = b.eval(&format!(
        r#"(() => {{
  const f = document.querySelector('#stage g.module.expanded .frame').getBoundingClientRect();
  return [...document.querySelectorAll('#stage g.node:not(.gone)')].filter(n => n.dataset.module === {first:?})
    .every(n => {{ const r = n.getBoundingClientRect();
      return r.left >= f.left - 0.5 && r.right <= f.right + 0.5 && r.top >= f.top - 0.5 && r.bottom <= f.bottom + 0.5; }});
}})()"#
    ));
    assert_eq!(
        inside, true,
        "every resource of {first} is inside its frame"
    );
    b.screenshot(&shots(), "module");

    // Unticking `create` hides the creates, in the open module too.
    b.click("input.action[value='create']");
    b.wait_until(
        "creates hidden",
        "[...document.querySelectorAll('#stage g.node[data-action=\"create\"]')].every(n => n.classList.contains('hidden'))",
    );
    let visible_updates = b.eval(
        "[...document.querySelectorAll('#stage g.node[data-action=\"update\"]')].filter(n => !n.classList.contains('hidden') && !n.classList.contains('gone')).length",
    );
    assert!(visible_updates.as_u64().unwrap() > 0);

    // A click on its label folds it back: the overview again.
    b.click("#stage g.module.expanded .label");
    b.wait_until(
        "collapsed again",
        "document.querySelectorAll('#stage g.module.collapsed').length === 20",
    );
    assert_eq!(boxes_of(&b.eval(PAGE_BOXES)), before);
    assert!(b.errors().is_empty(), "console errors: {:?}", b.errors());
}

#[test]
fn expand_all_draws_every_resource_of_a_big_plan_in_batches() {
    let Some(bin) = weir_browser::required() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    render(&mille::synth::plan(5000, 20, 200).to_string(), &out);
    let mut b = weir_browser::Browser::launch(&bin);
    b.goto(&format!("file://{}", out.join("graph.html").display()));
    b.wait_until(
        "the overview",
        "document.querySelectorAll('#stage g.module').length > 0",
    );
    let total = b.eval("JSON.parse(document.getElementById('model').textContent).nodes.length");
    b.click("#expand-all");
    b.wait_until(
        "every resource drawn",
        &format!("document.querySelectorAll('#stage g.node:not(.gone)').length === {total}"),
    );
    let status = b.eval("document.getElementById('status').textContent");
    assert_eq!(
        status.as_str().unwrap(),
        format!("{total} of {total} resources shown")
    );
    b.screenshot(&shots(), "expanded");
    assert!(b.errors().is_empty(), "console errors: {:?}", b.errors());
}

/// Addresses and instance keys are the user's strings: on the page they are text, whatever
/// they hold, and the page's policy allows no other script.
#[test]
fn markup_in_a_plan_stays_text_on_the_page() {
    let Some(bin) = weir_browser::required() else {
        return;
    };
    let evil = "<img src=x onerror=\"window.__xss=1\"></script><script>window.__xss=2</script>";
    let plan = serde_json::json!({
        "format_version": "1.2",
        "resource_changes": [{
            "address": format!("module.m[\"{}\"].aws_s3_bucket.b[\"{}\"]", evil.replace('"', "\\\""), evil.replace('"', "\\\"")),
            "module_address": format!("module.m[\"{}\"]", evil.replace('"', "\\\"")),
            "mode": "managed", "type": evil, "name": "b",
            "index": evil,
            "change": {"actions": ["create"]}
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    render(&plan.to_string(), &out);
    let html = std::fs::read_to_string(out.join("graph.html")).unwrap();
    assert!(html.contains("Content-Security-Policy"));
    assert_eq!(
        html.matches("<script").count(),
        2,
        "the model and the script, no more"
    );
    let mut b = weir_browser::Browser::launch(&bin);
    b.goto(&format!("file://{}", out.join("graph.html").display()));
    b.wait_until(
        "the resource",
        "document.querySelectorAll('#stage g.node').length === 1",
    );
    assert!(
        b.eval("window.__xss").is_null(),
        "no script of the plan ran"
    );
    assert_eq!(b.eval("document.querySelectorAll('img').length"), 0);
    assert_eq!(b.eval("document.querySelectorAll('script').length"), 2);
    let title = b.eval("document.querySelector('#stage g.node title').textContent");
    let title = title.as_str().unwrap();
    assert!(
        title.contains("<img src=x onerror=") && title.contains("</script><script>window.__xss=2"),
        "the address reads as it was written: {title}"
    );
    let option = b.eval("[...document.querySelectorAll('#type option')].map(o => o.textContent)");
    assert!(
        option.as_array().unwrap().iter().any(|o| o == evil),
        "{option}"
    );
}
