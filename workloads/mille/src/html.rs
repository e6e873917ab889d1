//! `graph.html`: one self-contained page (no CDN, no network) with the graph's SVG, zoom
//! (wheel, buttons) and pan (drag), filters by action, type and module, and, for a plan big
//! enough that modules start collapsed, each collapsed module's own drawing kept in an inert
//! `<template>` and drawn only when the module is clicked: the page loads with the overview,
//! and a module's detail costs nothing until it is asked for.

use crate::graph::Graph;
use crate::layout::Layout;
use crate::plan::Change;
use crate::svg::{escape, render};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The page for `g`.
pub fn page(g: &Graph, include_noop: bool, title: &str) -> String {
    let layout = Layout::of(g, include_noop);
    let overview = render(g, &layout);
    page_with(g, &layout, &overview, include_noop, title)
}

/// The page for `g`, given its layout and the SVG already drawn from it (what
/// `mille render` also writes as `graph.svg`), so neither is computed twice.
pub fn page_with(
    g: &Graph,
    layout: &Layout,
    overview: &str,
    include_noop: bool,
    title: &str,
) -> String {
    let mut templates = String::new();
    for m in layout.modules.iter().filter(|m| m.collapsed) {
        let sub = subgraph(g, &m.address);
        let sub_layout = Layout::of(&sub, include_noop);
        let _ = writeln!(
            templates,
            "<template data-module=\"{}\">{}</template>",
            escape(&m.address),
            render(&sub, &sub_layout)
        );
    }
    let shown = |c: &Change| include_noop || c.action != crate::plan::Action::NoOp;
    let actions: BTreeSet<&str> = g
        .nodes
        .iter()
        .filter(|c| shown(c))
        .map(|c| c.action.key())
        .collect();
    let types: BTreeSet<&str> = g
        .nodes
        .iter()
        .filter(|c| shown(c))
        .map(|c| c.ty.as_str())
        .collect();
    let modules: BTreeSet<&str> = g
        .nodes
        .iter()
        .filter(|c| shown(c))
        .map(|c| c.module.as_deref().unwrap_or(""))
        .collect();
    let mut filters = String::new();
    for a in &actions {
        let _ = write!(
            filters,
            "<label><input type=\"checkbox\" class=\"action\" value=\"{0}\" checked> {0}</label> ",
            escape(a)
        );
    }
    let options = |items: &BTreeSet<&str>, root: &str| {
        items
            .iter()
            .map(|t| {
                format!(
                    "<option value=\"{}\">{}</option>",
                    escape(t),
                    escape(if t.is_empty() { root } else { t })
                )
            })
            .collect::<String>()
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0; font: 13px Helvetica, Arial, sans-serif; color: #1d2330; }}
header {{ display: flex; flex-wrap: wrap; gap: .8rem; align-items: center; padding: .5rem .8rem; border-bottom: 1px solid #dde1e8; background: #f7f8fa; }}
header h1 {{ font-size: 14px; margin: 0 .6rem 0 0; }}
#view {{ position: absolute; top: 52px; left: 0; right: 0; bottom: 0; overflow: hidden; cursor: grab; background: #fff; }}
#view.dragging {{ cursor: grabbing; }}
#stage {{ transform-origin: 0 0; }}
#detail {{ position: absolute; top: 52px; right: 0; bottom: 0; width: 55%; overflow: auto; background: #fff; border-left: 2px solid #b8bfcc; box-shadow: -4px 0 12px rgba(0,0,0,.08); }}
#detail header {{ position: sticky; top: 0; }}
.hidden {{ display: none; }}
g.module.collapsed {{ cursor: pointer; }}
g.module.collapsed:hover rect {{ stroke: #2563eb; stroke-width: 2; }}
</style>
</head>
<body>
<header>
  <h1>{title}</h1>
  <span>{filters}</span>
  <select id="type"><option value="">every type</option>{type_options}</select>
  <select id="module"><option value="">every module</option>{module_options}</select>
  <button id="zoom-in" title="zoom in">+</button><button id="zoom-out" title="zoom out">−</button><button id="fit">fit</button>
  <span id="status"></span>
</header>
<div id="view"><div id="stage">{overview}</div></div>
<div id="detail" class="hidden"><header><strong id="detail-title"></strong> <button id="close">close</button></header><div id="detail-body"></div></div>
{templates}<script>
"use strict";
(() => {{
  const view = document.getElementById("view"), stage = document.getElementById("stage");
  let scale = 1, tx = 0, ty = 0;
  const apply = () => {{ stage.style.transform = `translate(${{tx}}px, ${{ty}}px) scale(${{scale}})`; }};
  const svg = stage.querySelector("svg");
  const fit = () => {{
    const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
    scale = Math.min(1, view.clientWidth / w, view.clientHeight / h); tx = 0; ty = 0; apply();
  }};
  const zoom = (f, cx, cy) => {{
    const s = Math.min(8, Math.max(0.05, scale * f));
    tx = cx - (cx - tx) * s / scale; ty = cy - (cy - ty) * s / scale; scale = s; apply();
  }};
  view.addEventListener("wheel", e => {{ e.preventDefault(); const r = view.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top); }}, {{ passive: false }});
  let drag = null;
  view.addEventListener("mousedown", e => {{ drag = {{ x: e.clientX - tx, y: e.clientY - ty, moved: false }}; view.classList.add("dragging"); }});
  window.addEventListener("mousemove", e => {{ if (!drag) return; drag.moved = true; tx = e.clientX - drag.x; ty = e.clientY - drag.y; apply(); }});
  window.addEventListener("mouseup", () => {{ view.classList.remove("dragging"); setTimeout(() => {{ drag = null; }}, 0); }});
  document.getElementById("zoom-in").onclick = () => zoom(1.25, view.clientWidth / 2, view.clientHeight / 2);
  document.getElementById("zoom-out").onclick = () => zoom(0.8, view.clientWidth / 2, view.clientHeight / 2);
  document.getElementById("fit").onclick = fit;

  const filter = () => {{
    const on = new Set([...document.querySelectorAll("input.action:checked")].map(i => i.value));
    const type = document.getElementById("type").value, mod = document.getElementById("module").value;
    let shown = 0, total = 0;
    for (const n of document.querySelectorAll("g.node")) {{
      total++;
      const ok = on.has(n.dataset.action) && (!type || n.dataset.type === type) &&
        (!mod || n.dataset.module === mod || n.dataset.module.startsWith(mod + "."));
      n.classList.toggle("hidden", !ok); if (ok) shown++;
    }}
    document.getElementById("status").textContent = `${{shown}} of ${{total}} resources shown`;
  }};
  for (const i of document.querySelectorAll("input.action, #type, #module")) i.addEventListener("change", filter);

  // A collapsed module opens its own drawing, cloned from its inert template on first use.
  const detail = document.getElementById("detail"), body = document.getElementById("detail-body");
  const open = name => {{
    const t = [...document.querySelectorAll("template[data-module]")].find(t => t.dataset.module === name);
    if (!t) return;
    body.replaceChildren(t.content.cloneNode(true));
    document.getElementById("detail-title").textContent = name;
    detail.classList.remove("hidden"); filter();
  }};
  stage.addEventListener("click", e => {{
    if (drag && drag.moved) return;
    const m = e.target.closest("g.module.collapsed"); if (m) open(m.dataset.module);
  }});
  document.getElementById("close").onclick = () => {{ detail.classList.add("hidden"); body.replaceChildren(); filter(); }};
  fit(); filter();
}})();
</script>
</body>
</html>
"#,
        title = escape(title),
        type_options = options(&types, ""),
        module_options = options(&modules, "root module"),
    )
}

/// The part of `g` inside module instance `inst`, with the edges among it.
pub fn subgraph(g: &Graph, inst: &str) -> Graph {
    let prefix = format!("{inst}.");
    let keep: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| {
            let m = g.nodes[i].module.as_deref().unwrap_or("");
            m == inst || m.starts_with(&prefix)
        })
        .collect();
    let new_ix: std::collections::BTreeMap<usize, usize> =
        keep.iter().enumerate().map(|(n, &o)| (o, n)).collect();
    Graph {
        nodes: keep.iter().map(|&i| g.nodes[i].clone()).collect(),
        edges: g
            .edges
            .iter()
            .filter_map(|(a, b)| Some((*new_ix.get(a)?, *new_ix.get(b)?)))
            .collect(),
    }
}
