"""The report of bench/soak.sh: RSS at each minute, flat or not, and a plot.

    python3 bench/soak_report.py SAMPLES.jsonl BENCH.json RATE OUT.json OUT.svg

SAMPLES.jsonl: one line a second, {"t", "rss_kib", "counts"?}; BENCH.json: `weir bench
--json`'s report of the steady phase.
"""

import json
import sys


def mib(kib):
    return kib / 1024


def flatness(samples):
    """Mean RSS of the middle third against the last third: a flush or compaction sawtooth
    averages out over a third of the run, growth does not. (The first third is warm-up:
    retention fills up to the completed jobs it keeps.)"""
    end = samples[-1]["t"]
    warm = [s["rss_kib"] for s in samples if end / 3 <= s["t"] < 2 * end / 3]
    last = [s["rss_kib"] for s in samples if s["t"] >= 2 * end / 3]
    if not warm or not last:
        sys.exit("soak_report.py: too few samples to compare")
    w, l = sum(warm) / len(warm), sum(last) / len(last)
    return w, l, (l - w) / w


def svg(samples, rate, growth):
    width, height, left, top, bottom = 760, 300, 60, 50, 40
    end = max(samples[-1]["t"], 1)
    peak = max(s["rss_kib"] for s in samples)
    ymax = max(1, mib(peak) * 1.15)

    def x(t):
        return left + (width - left - 20) * t / end

    def y(v):
        return top + (height - top - bottom) * (1 - v / ymax)

    pts = " ".join(f"{x(s['t']):.1f},{y(mib(s['rss_kib'])):.1f}" for s in samples)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="14" font-weight="bold">weir serve RSS under a steady '
        f"{rate:,} jobs/s (default retention)</text>",
        f'<text x="10" y="34" fill="#444">mean of the last third {growth:+.1%} against the '
        "middle third (the first is warm-up)</text>",
    ]
    step = 10 ** len(str(int(ymax))) // 10 or 1
    while ymax / step > 8:
        step *= 2
    v = 0
    while v <= ymax:
        out.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - 20}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#666">{v} MiB</text>'
        )
        v += step
    minute = 0
    while minute * 60 <= end:
        t = minute * 60
        out.append(
            f'<text x="{x(t):.1f}" y="{height - 18}" text-anchor="middle" fill="#666">'
            f"{minute} min</text>"
        )
        minute += 1 if end <= 900 else 5
    out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) != 6:
        sys.exit("usage: soak_report.py SAMPLES.jsonl BENCH.json RATE OUT.json OUT.svg")
    samples = [json.loads(l) for l in open(argv[1]) if l.strip()]
    bench = json.load(open(argv[2]))
    rate = int(argv[3])
    if len(samples) < 30:
        sys.exit("soak_report.py: fewer than 30 samples")
    warm, last, growth = flatness(samples)
    lat = bench.get("latency") or {}
    print(f"{lat.get('jobs', 0):,} jobs at {lat.get('held_jobs_per_s', 0):,.0f} jobs/s held "
          f"(asked {rate:,}); enqueue-to-start p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms")
    print("\n| end of minute | RSS | completed jobs kept | waiting |\n|---:|---:|---:|---:|")
    # The last sample of each minute, and the last counts read in it.
    by_minute = {}
    for s in samples:
        by_minute[int(s["t"] // 60)] = s
    counts = {}
    for s in samples:
        if "counts" in s:
            counts[int(s["t"] // 60)] = s["counts"]
    for m, s in sorted(by_minute.items()):
        c = counts.get(m, {})
        print(f"| {m + 1} | {mib(s['rss_kib']):.1f} MiB | {c.get('completed', '–')} | {c.get('waiting', '–')} |")
    peak = max(s["rss_kib"] for s in samples)
    verdict = "flat" if abs(growth) <= 0.05 else "NOT flat"
    print(f"\nmean RSS of the middle third {mib(warm):.1f} MiB, of the last third {mib(last):.1f} MiB "
          f"({growth:+.1%}): {verdict} (bound ±5 %); peak {mib(peak):.1f} MiB")
    json.dump({"rate": rate, "seconds": samples[-1]["t"], "warm_mib": mib(warm),
               "last_mib": mib(last), "growth": growth, "peak_mib": mib(peak),
               "flat": verdict == "flat", "latency": lat}, open(argv[4], "w"), indent=2)
    open(argv[5], "w").write(svg(samples, rate, growth))
    print(f"(plot: {argv[5]})")


if __name__ == "__main__":
    main(sys.argv)
