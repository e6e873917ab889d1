//! `graph.html` in headless Chromium: a 1,000-change plan opens on its overview (modules
//! collapsed, counted), with no console error; a real click on a collapsed module draws that
//! module's resources; the action filter hides what it should. Screenshots go to
//! `target/test-artifacts/mille/`. Needs Chromium (see the `weir-browser` crate: without one
//! the test says it was skipped, unless REQUIRE_BROWSER_TEST is set).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn a_big_plan_opens_collapsed_and_a_module_expands_on_click() {
    let Some(bin) = weir_browser::required() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, mille::synth::plan(1000, 20, 2000).to_string()).unwrap();
    let out = dir.path().join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mille"))
        .args([
            "render",
            "--no-cache",
            plan_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/mille");

    let mut b = weir_browser::Browser::launch(&bin);
    b.goto(&format!("file://{}", out.join("graph.html").display()));
    b.wait_until("the overview", "document.querySelector('#stage svg')");
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
    b.screenshot(&shots, "overview");

    // A real click on the first collapsed module opens its drawing.
    b.click("#stage g.module.collapsed rect");
    b.wait_until(
        "the module's detail",
        "!document.getElementById('detail').classList.contains('hidden')",
    );
    let drawn = b.eval("document.querySelectorAll('#detail-body g.node').length");
    assert!(
        drawn.as_u64().unwrap() >= 30,
        "the module's resources are drawn: {drawn}"
    );
    let title = b.eval("document.getElementById('detail-title').textContent");
    assert!(title.as_str().unwrap().starts_with("module.m"), "{title}");
    b.screenshot(&shots, "module");

    // Unticking `create` hides the creates, in the open module too.
    b.click("input.action[value='create']");
    b.wait_until(
        "creates hidden",
        "[...document.querySelectorAll('#detail-body g.node[data-action=\"create\"]')].every(n => n.classList.contains('hidden'))",
    );
    let visible_updates = b.eval(
        "[...document.querySelectorAll('#detail-body g.node[data-action=\"update\"]')].filter(n => !n.classList.contains('hidden')).length",
    );
    assert!(visible_updates.as_u64().unwrap() > 0);
    assert!(b.errors().is_empty(), "console errors: {:?}", b.errors());
}
