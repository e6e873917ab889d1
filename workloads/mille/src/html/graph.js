"use strict";
// graph.html's script. The page carries the graph as data (#model): every container's items
// in columns, in the order mille's layout gave them. Placing them is a stacking rule (columns
// left to right, items top to bottom; see layout.rs), so expanding a module in place only
// changes sizes and this script places everything again, exactly as mille did for graph.svg.
// Every string from the plan reaches the page through textContent or an attribute, never as
// markup.
(() => {
  const M = JSON.parse(document.getElementById("model").textContent);
  const G = M.geometry, NS = "http://www.w3.org/2000/svg", BATCH = 1500;
  const mk = (tag, parent, attrs) => {
    const e = document.createElementNS(NS, tag);
    if (attrs) for (const k of Object.keys(attrs)) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  };
  const view = document.getElementById("view"), stage = document.getElementById("stage");
  const status = document.getElementById("status");
  const svg = mk("svg", stage, { "font-family": "Helvetica, Arial, sans-serif", "font-size": 11 });
  const marker = mk("marker", mk("defs", svg), { id: "arrow", viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" });
  mk("path", marker, { d: "M0,0 L8,4 L0,8 z", fill: "#8890a0" });
  const bg = mk("rect", svg, { x: 0, y: 0, fill: "#ffffff" });
  const boxLayer = mk("g", svg), edgeLayer = mk("g", svg, { class: "edges", fill: "none", stroke: "#8890a0", "stroke-width": 1 });
  const nodeLayer = mk("g", svg);

  const initial = new Set(M.boxes.flatMap((b, i) => (b.c ? [i] : [])));
  let collapsed = new Set(initial);
  const boxByAddress = new Map(M.boxes.map((b, i) => [b.a, i]));
  const boxEls = new Map(), nodeEls = new Map();
  let L = null, pending = [], draining = false;

  // Sizes bottom up, then places top down: the same rule as layout.rs.
  const layout = () => {
    const size = new Map(), local = new Map();
    const itemSize = it => (it >= 0 ? [M.nodes[it][5], G.nodeH] : boxSize(-it - 1));
    const boxSize = b => (collapsed.has(b) ? [M.boxes[b].cw, M.boxes[b].ch] : container(b));
    const columns = b => (b < 0 ? M.root : M.boxes[b].k);
    const container = b => {
      const top = b < 0 ? G.pad : G.labelH + G.pad;
      let x = G.pad, height = 0;
      for (const col of columns(b)) {
        let y = top, width = 0;
        for (const it of col) {
          const s = itemSize(it);
          size.set(it, s); local.set(it, [x, y]);
          y += s[1] + G.gapY; width = Math.max(width, s[0]);
        }
        height = Math.max(height, y - G.gapY); x += width + G.gapX;
      }
      const min = b < 0 ? M.rootMinW : M.boxes[b].mw;
      return [Math.max(x - G.gapX + G.pad, min), Math.max(height + G.pad, top + G.pad)];
    };
    const [W, H] = container(-1);
    const nodes = new Map(), boxes = new Map();
    const place = (b, ox, oy) => {
      for (const col of columns(b)) for (const it of col) {
        const [lx, ly] = local.get(it), [w, h] = size.get(it), r = [ox + lx, oy + ly, w, h];
        if (it >= 0) nodes.set(it, r);
        else {
          const c = -it - 1;
          boxes.set(c, r);
          if (!collapsed.has(c)) place(c, r[0], r[1]);
        }
      }
    };
    place(-1, 0, 0);
    return { W, H, nodes, boxes };
  };

  const boxEl = b => {
    const m = M.boxes[b], g = mk("g", boxLayer, { class: "module" });
    g.dataset.module = m.a; g.dataset.box = String(b);
    mk("title", g).textContent = m.a;
    mk("rect", g, { class: "frame", rx: 6, stroke: "#b8bfcc" });
    mk("rect", g, { class: "hdr", height: G.labelH, fill: "#000000", "fill-opacity": 0 });
    mk("text", g, { class: "label", x: 8, y: 15, "font-weight": "bold", fill: "#3b4252" });
    mk("text", g, { class: "counts", x: 8, y: 34, fill: "#556" }).textContent = m.n;
    boxEls.set(b, g);
    return g;
  };
  const placeBox = (b, r) => {
    const g = boxEls.get(b) || boxEl(b), folded = collapsed.has(b);
    g.setAttribute("transform", `translate(${r[0]},${r[1]})`);
    g.classList.remove("gone"); g.classList.toggle("collapsed", folded); g.classList.toggle("expanded", !folded);
    const frame = g.querySelector(".frame");
    frame.setAttribute("width", r[2]); frame.setAttribute("height", r[3]);
    frame.setAttribute("fill", folded ? "#eef1f6" : "none");
    g.querySelector(".hdr").setAttribute("width", r[2]);
    g.querySelector(".label").textContent = (folded ? "▸ " : "▾ ") + M.boxes[b].l;
    g.querySelector(".counts").classList.toggle("gone", !folded);
  };
  const nodeEl = i => {
    const n = M.nodes[i], action = M.actions[n[2]];
    const g = mk("g", nodeLayer, { class: "node" });
    g.dataset.action = action; g.dataset.type = M.types[n[3]];
    g.dataset.module = n[4] >= 0 ? M.boxes[n[4]].a : "";
    mk("title", g).textContent = `${n[0]} — ${action}` + (n[6] ? ` (deposed ${n[6]})` : "");
    mk("rect", g, { width: n[5], height: G.nodeH, rx: 4, fill: M.colours[n[2]], stroke: "#7a8294" });
    mk("text", g, { x: 8, y: G.nodeH / 2 + 4, fill: "#1d2330" }).textContent = n[1];
    nodeEls.set(i, g);
    return g;
  };
  const placeNode = (g, r) => { g.setAttribute("transform", `translate(${r[0]},${r[1]})`); g.classList.remove("gone"); };

  // An edge's ends: a node, or the outermost collapsed module holding it.
  const drawEdges = () => {
    const holder = new Map();
    const held = b => {
      if (b < 0) return -1;
      if (!holder.has(b)) { const up = held(M.boxes[b].p); holder.set(b, up >= 0 ? up : collapsed.has(b) ? b : -1); }
      return holder.get(b);
    };
    const end = i => { const h = held(M.nodes[i][4]); return h >= 0 ? -h - 1 : i; };
    const rect = e => (e >= 0 ? L.nodes.get(e) : L.boxes.get(-e - 1));
    const seen = new Set(), out = document.createDocumentFragment(), E = M.edges;
    for (let k = 0; k + 1 < E.length; k += 2) {
      const a = end(E[k]), b = end(E[k + 1]);
      if (a === b || seen.has(a + "," + b)) continue;
      seen.add(a + "," + b);
      const ra = rect(a), rb = rect(b);
      if (!ra || !rb) continue;
      // From the dependent's left side to the dependency's right side.
      const x1 = ra[0], y1 = ra[1] + ra[3] / 2, x2 = rb[0] + rb[2], y2 = rb[1] + rb[3] / 2;
      const dx = Math.max(Math.abs(x1 - x2) / 2, 20);
      mk("path", out, { d: `M${x1},${y1} C${x1 - dx},${y1} ${x2 + dx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" });
    }
    edgeLayer.replaceChildren(out);
  };

  // Draws the current state: boxes and edges at once, nodes created in batches of BATCH per
  // frame, so a big expansion paints progressively instead of freezing the page.
  const draw = () => {
    L = layout();
    for (const a of [svg, bg]) { a.setAttribute("width", L.W); a.setAttribute("height", L.H); }
    svg.setAttribute("viewBox", `0 0 ${L.W} ${L.H}`);
    for (const [b, g] of boxEls) if (!L.boxes.has(b)) g.classList.add("gone");
    for (const [i, g] of nodeEls) if (!L.nodes.has(i)) g.classList.add("gone");
    for (const [b, r] of L.boxes) placeBox(b, r);
    pending = [];
    for (const [i, r] of L.nodes) { const g = nodeEls.get(i); if (g) placeNode(g, r); else pending.push(i); }
    drawEdges();
    if (pending.length && !draining) { draining = true; requestAnimationFrame(drain); }
    filter();
  };
  const drain = () => {
    for (const i of pending.splice(0, BATCH)) { const r = L.nodes.get(i); if (r) placeNode(nodeEl(i), r); }
    filter();
    if (pending.length) requestAnimationFrame(drain); else draining = false;
  };

  const filter = () => {
    const on = new Set([...document.querySelectorAll("input.action:checked")].map(i => i.value));
    const type = document.getElementById("type").value, mod = document.getElementById("module").value;
    let shown = 0;
    for (const g of nodeEls.values()) {
      const d = g.dataset;
      const ok = on.has(d.action) && (!type || d.type === type) && (!mod || d.module === mod || d.module.startsWith(mod + "."));
      g.classList.toggle("hidden", !ok);
      if (ok && !g.classList.contains("gone")) shown++;
    }
    status.textContent = pending.length
      ? `drawing… ${L.nodes.size - pending.length} of ${L.nodes.size}`
      : `${shown} of ${M.nodes.length} resources shown`;
  };
  for (const i of document.querySelectorAll("input.action, #type")) i.addEventListener("change", filter);
  // Choosing a module opens it (and the modules around it) where it is.
  document.getElementById("module").addEventListener("change", e => {
    const chosen = boxByAddress.has(e.target.value) ? boxByAddress.get(e.target.value) : -1;
    for (let b = chosen; b >= 0; b = M.boxes[b].p) collapsed.delete(b);
    draw();
    if (chosen >= 0) focus(chosen);
  });

  let scale = 1, tx = 0, ty = 0;
  const apply = () => { stage.style.transform = `translate(${tx}px, ${ty}px) scale(${scale})`; };
  // Brings module b into view, whole if it fits at full size.
  const focus = b => {
    const r = L.boxes.get(b);
    if (!r) return;
    scale = Math.max(0.02, Math.min(1, 0.9 * view.clientWidth / r[2], 0.9 * view.clientHeight / r[3]));
    tx = view.clientWidth / 2 - (r[0] + r[2] / 2) * scale;
    ty = Math.min(0, view.clientHeight / 2 - (r[1] + r[3] / 2) * scale);
    apply();
  };
  const fit = () => { scale = Math.min(1, view.clientWidth / L.W, view.clientHeight / L.H); tx = 0; ty = 0; apply(); };
  const zoom = (f, cx, cy) => {
    const s = Math.min(8, Math.max(0.02, scale * f));
    tx = cx - (cx - tx) * s / scale; ty = cy - (cy - ty) * s / scale; scale = s; apply();
  };
  view.addEventListener("wheel", e => {
    e.preventDefault();
    const r = view.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  view.addEventListener("mousedown", e => { drag = { x: e.clientX - tx, y: e.clientY - ty, moved: false }; view.classList.add("dragging"); });
  window.addEventListener("mousemove", e => {
    if (!drag) return;
    if (Math.abs(e.clientX - tx - drag.x) + Math.abs(e.clientY - ty - drag.y) > 3) drag.moved = true;
    if (drag.moved) { tx = e.clientX - drag.x; ty = e.clientY - drag.y; apply(); }
  });
  window.addEventListener("mouseup", () => { view.classList.remove("dragging"); setTimeout(() => { drag = null; }, 0); });
  document.getElementById("zoom-in").onclick = () => zoom(1.25, view.clientWidth / 2, view.clientHeight / 2);
  document.getElementById("zoom-out").onclick = () => zoom(0.8, view.clientWidth / 2, view.clientHeight / 2);
  document.getElementById("fit").onclick = fit;
  document.getElementById("expand-all").onclick = () => { collapsed = new Set(); draw(); };
  document.getElementById("overview").onclick = () => { collapsed = new Set(initial); draw(); fit(); };

  // A click on a collapsed module expands it in place; on an open module's label row,
  // collapses it.
  stage.addEventListener("click", e => {
    if (drag && drag.moved) return;
    const g = e.target.closest("g.module");
    if (!g) return;
    const b = Number(g.dataset.box);
    if (collapsed.has(b)) { collapsed.delete(b); draw(); focus(b); }
    else if (e.target.closest(".hdr, .label")) { collapsed.add(b); draw(); }
  });
  draw(); fit();
})();
