#!/usr/bin/env python3
"""Draws the results of make bench (tests/bench/run.py) with gnuplot, as SVG.

Reads DIR/results.json (every run of every cell, as run.py saves it) and
the first line of DIR/results.md (when and how it was measured), and
writes into DIR (or --out):

  relay-throughput.svg  frames/s received per relay cell: Ferry, the
                        Tornado reference, the floor (plain only) and a
                        baseline Ferry if one ran
  relay-latency.svg     p50 and p99 latency per relay cell, same servers
  relay-cdf.svg         each relay cell's latency distribution: latency
                        against the percentile (50, 90, 99, 99.9, 99.99,
                        then the maximum), one panel per cell
  tls.svg               Ferry's forward listener, hitch and HAProxy:
                        handshakes/s and CPU per handshake (TLS 1.3, 1.2),
                        bulk MB/s and CPU per GB
  memory.svg            KiB per idle connection, Ferry and hitch

Every value is the median over the runs, as in results.md; a
distribution is the median of each percentile over the runs (the
`lat_q_us` of ferry-bench's RESULT line).  What was not run is left out.
Needs gnuplot (Debian's gnuplot-nox).  Python 3 standard library only.
"""
import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

SERVERS = {  # key: (name, colour)
    "ferry": ("Ferry", "#1f5fbf"),
    "base": ("Ferry (baseline)", "#7fa7e0"),
    "floor": ("floor", "#7f7f7f"),
    "tornado": ("Tornado", "#e07b1f"),
    "hitch": ("hitch", "#2f9f4f"),
    "haproxy": ("HAProxy", "#8f3faf"),
}
RELAY_ORDER = ("ferry", "base", "floor", "tornado")
TLS_ORDER = ("ferry", "hitch", "haproxy")
# Percentiles on the x axis of a distribution: -log10(1 - q), so that
# each "nine" takes the same room; the maximum is drawn one step on.
NINES = [("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999),
         ("99.99", 0.9999)]
MAX_X = 5.0

HEAD = """set terminal svg size {w},{h} dynamic enhanced font "sans,11" background "white"
set output "{out}"
set datafile missing "NaN"
set datafile separator "\\t"
set key top left noenhanced
set grid ytics lc rgb "#dddddd"
set border 3
set tics nomirror
"""


def median(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


class Results:
    def __init__(self, d):
        with open(os.path.join(d, "results.json")) as f:
            self.runs = json.load(f)["runs"]
        self.when = ""
        try:
            with open(os.path.join(d, "results.md")) as f:
                first = f.readline()
            m = re.search(r"Measured (.+?) with `(.+?)`", first)
            n = re.search(r"median of (\d+) runs", first)
            if m:
                self.when = "%s, %s%s" % (m.group(2), m.group(1),
                                         ", median of %s runs" % n.group(1)
                                         if n else "")
        except OSError:
            pass

    def select(self, section, cell, server):
        return [r for r in self.runs if r["section"] == section and
                r["cell"] == cell and r["server"] == server and
                r.get("result")]

    def med(self, section, cell, server, fn):
        return median([fn(r) for r in self.select(section, cell, server)])

    def cells(self, section):
        """The cells of a section, in the order they first ran."""
        seen = []
        for r in self.runs:
            if r["section"] == section and r["cell"] not in seen:
                seen.append(r["cell"])
        return seen

    def servers(self, section, order):
        have = {r["server"] for r in self.runs if r["section"] == section
                and r.get("result")}
        return [s for s in order if s in have]

    def relay_label(self, cell):
        """'P=10 plain', '1000x60Hz TLS': from the cell's RESULT."""
        label, tls = cell
        res = next((r["result"] for r in self.runs if r["section"] == "relay"
                    and r["cell"] == cell and r.get("result")), None)
        if res and res.get("rate"):
            short = "%d×%d Hz" % (res["p"], res["rate"])
        elif res:
            short = "P=%d" % res["p"]
        else:
            short = label
        return "%s %s" % (short, "TLS" if tls else "plain")

    def quantiles(self, cell, server):
        """[(q, median µs)] of a relay cell's distribution, or []."""
        per_q = {}
        for r in self.select("relay", cell, server):
            text = r["result"].get("lat_q_us")
            if not isinstance(text, str):
                continue
            for pair in text.split(","):
                q, _, v = pair.partition(":")
                per_q.setdefault(float(q), []).append(float(v))
        return sorted((q, statistics.median(v)) for q, v in per_q.items())


def fmt(v):
    return "NaN" if v is None else "%.6g" % v


def write_table(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")


def bars(columns):
    """gnuplot's clustered histogram of data columns 2..n, coloured by
    server, titled by the header row."""
    return ", ".join(
        "'{data}' using %d:xtic(1) title columnheader(%d) lc rgb '%s'" % (
            i + 2, i + 2, SERVERS[s][1]) for i, s in enumerate(columns))


HIST = """set key outside right top vertical
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -30 scale 0
"""


class Plotter:
    def __init__(self, res, out, tmp):
        self.res = res
        self.out = out
        self.tmp = tmp
        self.made = []

    def gnuplot(self, name, script, w, h):
        path = os.path.join(self.out, name)
        gp = os.path.join(self.tmp, name + ".gp")
        with open(gp, "w") as f:
            f.write(HEAD.format(w=w, h=h, out=path) + script)
        p = subprocess.run(["gnuplot", gp], capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise RuntimeError("gnuplot %s: %s" % (gp, p.stderr.strip()))
        self.made.append(path)

    def subtitle(self, what):
        return "%s\\n%s" % (what, self.res.when) if self.res.when else what

    def relay_table(self, name, fn, servers):
        rows = [["cell"] + [SERVERS[s][0] for s in servers]]
        for cell in self.res.cells("relay"):
            rows.append([self.res.relay_label(cell)] + [
                fmt(self.res.med("relay", cell, s, fn)) for s in servers])
        path = os.path.join(self.tmp, name)
        write_table(path, rows)
        return path

    def relay(self):
        servers = self.res.servers("relay", RELAY_ORDER)
        if not servers:
            return
        ncells = len(self.res.cells("relay"))
        w = max(700, 90 * ncells * max(1, len(servers)) // 2 + 200)
        data = self.relay_table("relay-fps.dat", lambda r: r["result"].get(
            "frames_per_s"), servers)
        self.gnuplot("relay-throughput.svg", HIST + """
set title "%s" noenhanced
set ylabel "frames/s received (log)"
set logscale y
set yrange [10:*]
plot %s
""" % (self.subtitle("Device relay: throughput per cell"),
           bars(servers).format(data=data)), w, 480)
        p50 = self.relay_table("relay-p50.dat", lambda r: r["result"].get(
            "p50_us"), servers)
        p99 = self.relay_table("relay-p99.dat", lambda r: r["result"].get(
            "p99_us"), servers)
        self.gnuplot("relay-latency.svg", HIST + """
set multiplot layout 2,1 title "%s" noenhanced
set logscale y
set ylabel "p50 latency (µs, log)"
plot %s
set ylabel "p99 latency (µs, log)"
plot %s
unset multiplot
""" % (self.subtitle("Device relay: latency per cell, producer's send to "
                     "consumer's read"),
           bars(servers).format(data=p50), bars(servers).format(data=p99)),
            w, 820)
        self.relay_cdf(servers)

    def relay_cdf(self, servers):
        cells = self.res.cells("relay")
        labels = {}
        for cell in cells:
            labels.setdefault(cell[0], {})[bool(cell[1])] = cell
        rows = list(labels)
        cols = sorted({bool(c[1]) for c in cells})
        panels = []
        for label in rows:
            for tls in cols:
                cell = labels[label].get(tls)
                lines = []
                for s in servers:
                    qs = self.res.quantiles(cell, s) if cell else []
                    if not qs:
                        continue
                    data = os.path.join(self.tmp, "cdf-%d-%s.dat" % (
                        len(panels), s))
                    write_table(data, [
                        ("%.6g" % (MAX_X if q >= 1 else -_log10(1 - q)),
                         "%.6g" % v) for q, v in qs if q >= 0.5])
                    lines.append("'%s' using 1:2 with linespoints pt 7 ps 0.5 "
                                 "lw 1.5 lc rgb '%s' title '%s'" % (
                                     data, SERVERS[s][1], SERVERS[s][0]))
                title = self.res.relay_label(cell) if cell else ""
                panels.append((title, lines))
        if not any(lines for _, lines in panels):
            return
        tics = ", ".join('"%s" %.6g' % (t, -_log10(1 - q)) for t, q in NINES)
        script = ["""set multiplot layout %d,%d title "%s" noenhanced
set logscale y
set xrange [%.3f:%.3f]
set xtics (%s, "max" %.1f)
set xlabel "percentile"
set ylabel "latency (µs, log)"
set key bottom right opaque
set grid xtics ytics lc rgb "#dddddd"
""" % (len(rows), len(cols), self.subtitle(
            "Device relay: latency distribution per cell"),
            -_log10(0.5) - 0.1, MAX_X + 0.1, tics, MAX_X)]
        for title, lines in panels:
            if lines:
                script.append('set title "%s" noenhanced\nplot %s\n' % (
                    title, ", ".join(lines)))
            else:
                script.append("set multiplot next\n")
        script.append("unset multiplot\n")
        self.gnuplot("relay-cdf.svg", "".join(script), 1000,
                     60 + 300 * len(rows))

    def tls(self):
        servers = self.res.servers("tls", TLS_ORDER)
        if not servers:
            return

        def per_hs(r):
            tot = r["result"].get("total")
            return r.get("server_cpu_s", 0) / tot * 1e6 if tot else None

        def per_gb(r):
            tot = r["result"].get("total")
            return r.get("server_cpu_s", 0) / (tot / 1e9) if tot else None
        measures = [
            ("hs13", lambda r: r["result"].get("handshakes_per_s"),
             "TLS 1.3 handshakes/s"),
            ("hs12", lambda r: r["result"].get("handshakes_per_s"),
             "TLS 1.2 handshakes/s"),
            ("bulk", lambda r: r["result"].get("mb_per_s"),
             "bulk TLS→plain MB/s"),
            ("hs13", per_hs, "TLS 1.3 server CPU per handshake (µs)"),
            ("hs12", per_hs, "TLS 1.2 server CPU per handshake (µs)"),
            ("bulk", per_gb, "bulk server CPU per GB (s)"),
        ]
        script = ["""set multiplot layout 2,3 title "%s" noenhanced
set style fill solid 0.85 border -1
set boxwidth 0.7
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set xrange [-0.6:%.1f]
unset key
""" % (self.subtitle("TLS: Ferry's forward listener against hitch and "
                     "HAProxy (lower is better for CPU)"),
       len(servers) - 0.4)]
        for i, (cell, fn, title) in enumerate(measures):
            vals = [self.res.med("tls", cell, s, fn) for s in servers]
            if all(v is None for v in vals):
                script.append("set multiplot next\n")   # not run
                continue
            data = os.path.join(self.tmp, "tls-%d.dat" % i)
            write_table(data, [(SERVERS[s][0], fmt(v), int(SERVERS[s][1][1:],
                                                           16))
                               for s, v in zip(servers, vals)])
            script.append('set title "%s" noenhanced\nplot \'%s\' using '
                          '0:2:3:xtic(1) with boxes lc rgb variable notitle, \'\' '
                          'using 0:2:($2 >= 100 ? sprintf("%%.0f", $2) : sprintf("%%.3g", $2)) with labels '
                          'offset 0,0.6 notitle\n' % (title, data))
        script.append("unset multiplot\n")
        self.gnuplot("tls.svg", "".join(script), 1000, 640)

    def memory(self):
        cells = [("tls", "ferry-forward", "Ferry forward, TLS"),
                 ("tls", "hitch", "hitch, TLS"),
                 ("tls", "ferry-relay", "Ferry relay, TLS"),
                 ("plain", "ferry-forward", "Ferry forward, plain"),
                 ("plain", "ferry-relay", "Ferry relay, plain")]
        rows = []
        for kind, server, label in cells:
            v = self.res.med("memory", kind, server,
                             lambda r: r["result"].get("kb_per_conn"))
            if v is not None:
                colour = SERVERS["hitch" if server == "hitch" else "ferry"][1]
                rows.append((label, fmt(v), int(colour[1:], 16)))
        if not rows:
            return
        data = os.path.join(self.tmp, "memory.dat")
        write_table(data, rows)
        self.gnuplot("memory.svg", """set title "%s" noenhanced
set style fill solid 0.85 border -1
set boxwidth 0.7
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set xrange [-0.6:%.1f]
set xtics rotate by -20 scale 0
set ylabel "KiB per idle connection"
unset key
plot '%s' using 0:2:3:xtic(1) with boxes lc rgb variable notitle, \
     '' using 0:2:($2 >= 100 ? sprintf("%%.0f", $2) : sprintf("%%.3g", $2)) with labels offset 0,0.6 notitle
""" % (self.subtitle("Memory per idle connection (server RSS growth / N)"),
            len(rows) - 0.4, data), 700, 420)


def _log10(x):
    return math.log10(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="where run.py wrote results.json "
                    "(BUILD/bench)")
    ap.add_argument("--out", help="where to write the SVGs (DIR)")
    args = ap.parse_args()
    if shutil.which("gnuplot") is None:
        sys.exit("plot.py: gnuplot is missing (apt-get install gnuplot-nox)")
    res = Results(args.dir)
    out = args.out or args.dir
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferry-plot-") as tmp:
        p = Plotter(res, out, tmp)
        try:
            p.relay()
            p.tls()
            p.memory()
        except RuntimeError as e:
            sys.exit("plot.py: %s" % e)
    for path in p.made:
        print("plot.py: %s" % path)
    if not p.made:
        sys.exit("plot.py: nothing to draw in %s" % args.dir)


if __name__ == "__main__":
    main()
