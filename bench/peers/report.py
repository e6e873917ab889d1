"""The peer table of bench/peers/run.sh, from its results.

    python3 bench/peers/report.py RESULTS.jsonl RUN.json [--write BENCHMARKS.md]

RESULTS.jsonl has one line per system (Weir in fsync mode first); RUN.json the run's
parameters, date, machine and duration. Prints the Markdown; with --write, also puts it into
the file between the `peers:begin`/`peers:end` markers (adding the section if missing), and
draws the figures as `docs/peers.svg` beside it (end-to-end rate and p99 latency, both on log
scales: the systems span three orders of magnitude), so a run can be rendered again without
being run again.
"""

import html
import json
import math
import os
import sys

TARGETS = {"BullMQ": 10, "Celery": 10, "graphile-worker": 5}  # DESIGN.md, end to end
BEGIN = "<!-- peers:begin (written by bench/peers/run.sh) -->\n"
END = "<!-- peers:end -->\n"


def render(rows, run):
    weir = rows[0]
    rate = run["rate"]
    took = run["took_s"]
    out = [
        f"Run of `bash bench/peers/run.sh` on {run['date']}: {run['machine']}; every system and "
        f"its load generator on the same cores. N = {run['n']:,} jobs of a 100-byte JSON payload, "
        f"no-op handler; latency while a producer sends a steady {rate:,} jobs/s for "
        f"{run['seconds']} s. The whole run took {took // 60} min {took % 60} s.",
        "",
        "![End-to-end jobs/s and p99 enqueue-to-start latency of each system](docs/peers.svg)",
        "",
        "| system | version | enqueue jobs/s | end-to-end jobs/s | Weir (fsync) ÷ this, end to end "
        "| p50 / p99 enqueue-to-start | rate held | peak RSS, server side |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "—" if r["system"].startswith("Weir") else f"**{weir['e2e'] / r['e2e']:.1f}×**"
        held = f"{r['held']:,.0f}/s" + ("" if r["held"] >= rate * 0.97 else " ⚠")
        out.append(
            f"| {r['system']} | {r['version']} | {r['enqueue']:,.0f} | {r['e2e']:,.0f} | {ratio} | "
            f"{r['p50']:.2f} / {r['p99']:.2f} ms | {held} | {r['rss_mib']:.0f} MiB |"
        )
    out.append("")
    for r in rows:
        if r["system"] in TARGETS:
            got, want = weir["e2e"] / r["e2e"], TARGETS[r["system"]]
            verdict = "met" if got >= want else f"**not met** ({got / want:.0%} of it)"
            out.append(
                f"- Against {r['system']}: target ≥ {want}× end to end, measured {got:.1f}× — {verdict}."
            )
    if any(r["held"] < rate * 0.97 for r in rows):
        out.append(
            f"- ⚠: the producer could not hold {rate:,} jobs/s, so the latency is that of a "
            "growing backlog."
        )
    out += ["", "Durability of each, as run:", ""]
    out += [f"- {r['system']}: {r['durability']}." for r in rows]
    out += ["", "Settings:", ""]
    out += [f"- {r['system']}: {r['settings']}." for r in rows if r.get("settings")]
    out += ["", "Memory: " + "; ".join(f"{r['system']}: {r['rss_how']}" for r in rows) + "."]
    return "\n".join(out) + "\n"


def svg(rows, run):
    """Two horizontal bar charts on log scales: end-to-end jobs/s, p99 latency in ms."""
    bar_h, gap, left, width, top = 22, 8, 150, 300, 58
    height = top + len(rows) * (bar_h + gap) + 40
    charts = [
        ("end-to-end jobs/s (more is better)", "e2e", lambda v: f"{v:,.0f}"),
        ("p99 enqueue-to-start, ms (less is better)", "p99", lambda v: f"{v:,.2f}"),
    ]
    # The same mark as the table's: a producer that fell behind measured a backlog.
    behind = [
        "p99" if r["held"] < run["rate"] * 0.97 else None for r in rows
    ]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * (left + width + 90)}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">Weir and its peers, same '
        f'{html.escape(run["machine"].split(",")[0])} machine, {run["date"]}: '
        f'{run["n"]:,} jobs, latency at {run["rate"]:,}/s</text>',
    ]
    for c, (title, key, fmt) in enumerate(charts):
        x0 = c * (left + width + 90)
        values = [max(r[key], 1e-3) for r in rows]
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        span = math.log10(hi) - math.log10(lo) or 1

        def scale(v):
            return width * (math.log10(v) - math.log10(lo)) / span

        out.append(f'<text x="{x0 + left}" y="{top - 14}" font-weight="bold">{title}</text>')
        decade = lo
        while decade <= hi:
            x = x0 + left + scale(decade)
            label = f"{decade:,.0f}" if decade >= 1 else f"{decade:g}"
            out.append(
                f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 30}" stroke="#ddd"/>'
                f'<text x="{x:.1f}" y="{height - 16}" text-anchor="middle" fill="#666">'
                f"{label}</text>"
            )
            decade *= 10
        for i, (r, v) in enumerate(zip(rows, values)):
            y = top + i * (bar_h + gap)
            colour = "#1f77b4" if r["system"].startswith("Weir") else "#999"
            w = max(scale(v), 1)
            out.append(
                f'<text x="{x0 + left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">'
                f'{html.escape(r["system"])}</text>'
                f'<rect x="{x0 + left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
                f'<text x="{x0 + left + w + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{fmt(r[key])}'
                f'{" ⚠ backlog" if behind[i] == key else ""}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(path, table):
    text = open(path).read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + table + END + rest.split(END, 1)[1]
    else:
        text = (
            text.rstrip()
            + "\n\n## Against BullMQ, Celery and graphile-worker (issue 6)\n\n"
            + BEGIN
            + table
            + END
        )
    open(path, "w").write(text)


def main(argv):
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--write"):
        sys.exit("usage: report.py RESULTS.jsonl RUN.json [--write BENCHMARKS.md]")
    rows = [json.loads(line) for line in open(argv[1]) if line.strip()]
    if not rows or not rows[0]["system"].startswith("Weir"):
        sys.exit("report.py: the results must start with Weir's line")
    table = render(rows, json.load(open(argv[2])))
    print(table)
    if len(argv) == 5:
        write(argv[4], table)
        figure = os.path.join(os.path.dirname(os.path.abspath(argv[4])), "docs", "peers.svg")
        with open(figure, "w") as f:
            f.write(svg(rows, json.load(open(argv[2]))))
        print(f"(written into {argv[4]} and {figure})")


if __name__ == "__main__":
    main(sys.argv)
