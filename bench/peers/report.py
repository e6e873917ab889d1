"""The peer table of bench/peers/run.sh, from its results.

    python3 bench/peers/report.py RESULTS.jsonl RUN.json [--write BENCHMARKS.md]

RESULTS.jsonl has one line per system (Weir in fsync mode first); RUN.json the run's
parameters, date, machine and duration. Prints the Markdown; with --write, also puts it into
the file between the `peers:begin`/`peers:end` markers (adding the section if missing), so a
run can be rendered again without being run again.
"""

import json
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
        print(f"(written into {argv[4]})")


if __name__ == "__main__":
    main(sys.argv)
