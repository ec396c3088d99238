#!/usr/bin/env python3
"""Draws the benchmark chart (an SVG, no dependencies) from the JSON lines scripts/compare.py
writes: one panel per figure, one bar per server, from the newest run of each server in each
scenario (the median of its rounds, as in compare.py's table). The targeted panel also has a
bar for `loopback`, the machine's own round trip (compare.py's `rtt` scenario), when the
results have one.

    scripts/chart.py bench-results.jsonl > docs/benchmarks.svg
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import figure  # noqa: E402

PANELS = [
    ("max", "deliveries_per_s", 1e-3, "fan-out, 10k sessions", "thousand deliveries/s (more is better)"),
    ("light", "latency_p99_us", 1e-3, "p99 latency at 1 msg/s", "ms (less is better)"),
    ("idle", "rss_per_idle_session_kib", 1.0, "memory per idle session", "KiB (less is better)"),
    ("idle", "connects_per_s", 1e-3, "session connects", "thousand/s (more is better)"),
    ("t19k", "latency_p99_us", 1.0, "p99 to 1 of 19,500 users", "µs (less is better)"),
]
# The panel that shows the machine's own round trip beside the servers.
FLOOR_PANEL = "t19k"
COLORS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#718096", "#d53f8c"]
W, H, PAD, TOP = 300, 260, 40, 50


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    newest = max(r.get("run", "") for r in rows)
    servers = list(dict.fromkeys(r["label"] for r in rows if r["scenario"] != "rtt"))
    floor = figure(rows, "loopback", "rtt", "latency_p99_us")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(PANELS)}" height="{H + 40}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>']
    for p, (scen, key, scale, title, unit) in enumerate(PANELS):
        x0 = p * W
        names, vals = list(servers), []
        for n in names:
            v = figure(rows, n, scen, key)
            vals.append(None if v is None else v * scale)
        if scen == FLOOR_PANEL and floor is not None:
            names.append("loopback")
            vals.append(floor * scale)
        top = max([v for v in vals if v is not None] or [1]) or 1
        out.append(f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="13" '
                   f'font-weight="bold">{esc(title)}</text>')
        out.append(f'<text x="{x0 + W / 2}" y="34" text-anchor="middle" fill="#555">{esc(unit)}</text>')
        bw = (W - 2 * PAD) / max(len(names), 1)
        for i, (n, v) in enumerate(zip(names, vals)):
            bx = x0 + PAD + i * bw + 4
            label = "-" if v is None else (f"{v:.1f}" if v < 100 else f"{v:,.0f}")
            h = 0 if v is None else (H - TOP - 30) * v / top
            by = H - 30 - h
            out.append(f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw - 8:.1f}" height="{h:.1f}" '
                       f'fill="{COLORS[i % len(COLORS)]}"/>')
            out.append(f'<text x="{bx + (bw - 8) / 2:.1f}" y="{by - 4:.1f}" text-anchor="middle">'
                       f'{esc(label)}</text>')
            out.append(f'<text x="{bx + (bw - 8) / 2:.1f}" y="{H - 14}" text-anchor="middle">'
                       f'{esc(n)}</text>')
        out.append(f'<line x1="{x0 + PAD}" y1="{H - 30}" x2="{x0 + W - PAD}" y2="{H - 30}" stroke="#333"/>')
    out.append(f'<text x="10" y="{H + 25}" fill="#555">{esc("pushnote-bench; each figure from its newest run (median of its rounds), the last on " + newest)}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
