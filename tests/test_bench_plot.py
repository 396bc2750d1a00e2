"""tests/bench/plot.py, on results made up here in run.py's format.

The numbers it draws: medians over runs, the relay cells' labels from
their RESULT, the latency distribution's per-percentile medians, the TLS
CPU per handshake; and, where gnuplot is installed (make bench installs
gnuplot-nox), the five SVGs: well-formed XML, each naming what it
compares, no temporary path left in them.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
PLOT = os.path.join(HERE, "bench", "plot.py")

spec = importlib.util.spec_from_file_location("plot", PLOT)
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)


def relay_run(cell, tls, server, p, rate, fps, p50, p99, quantiles):
    return {"section": "relay", "cell": [cell, tls], "server": server,
            "result": {"p": float(p), "rate": float(rate), "frames_per_s": fps,
                       "p50_us": p50, "p99_us": p99,
                       "lat_q_us": ",".join("%g:%g" % qv for qv in quantiles)}}


def results():
    runs = []
    for k, (fps, p50) in enumerate([(1000.0, 10.0), (3000.0, 30.0), (2000.0, 20.0)]):
        q = [(0.5, p50), (0.99, 2 * p50), (0.9999, 3 * p50), (1, 4 * p50 + k)]
        runs.append(relay_run("P=10, full speed", False, "ferry", 10, 0, fps, p50,
                              2 * p50, q))
        runs.append(relay_run("P=10, full speed", False, "floor", 10, 0, fps / 2,
                              p50 / 2, p50, q))
        runs.append(relay_run("1000 pairs x 60 Hz", True, "tornado", 1000, 60,
                              60000.0, 100 * p50, 200 * p50, q))
        runs.append({"section": "tls", "cell": "hs13", "server": "hitch",
                     "result": {"handshakes_per_s": 900.0 + k, "total": 1000.0},
                     "server_cpu_s": 0.5 + k / 10})
    runs.append({"section": "relay", "cell": ["P=10, full speed", False],
                 "server": "tornado", "result": None})
    runs.append({"section": "memory", "cell": "tls", "server": "hitch",
                 "result": {"kb_per_conn": 42.0}})
    return {"runs": runs}


class PlotData(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ferry-plot-test-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(results(), f)
        with open(os.path.join(self.dir, "results.md"), "w") as f:
            f.write("Measured 2026-12-03 12:39 UTC with `make bench` on 2 cores; "
                    "median of 3 runs per cell (memory: 1).\n")
        self.res = plot.Results(self.dir)

    def test_medians_labels_and_distributions(self):
        r = self.res
        cell = ["P=10, full speed", False]
        self.assertEqual(r.med("relay", cell, "ferry",
                               lambda x: x["result"]["frames_per_s"]), 2000.0)
        self.assertEqual(r.cells("relay"), [cell, ["1000 pairs x 60 Hz", True]])
        self.assertEqual(r.relay_label(cell), "P=10 plain")
        self.assertEqual(r.relay_label(["1000 pairs x 60 Hz", True]),
                         "1000×60 Hz TLS")
        # A run without a result is no server's value.
        self.assertEqual(r.servers("relay", plot.RELAY_ORDER),
                         ["ferry", "floor", "tornado"])
        self.assertEqual(r.quantiles(cell, "ferry"),
                         [(0.5, 20.0), (0.99, 40.0), (0.9999, 60.0), (1.0, 82.0)])
        self.assertIn("make bench, 2026-12-03 12:39 UTC, median of 3 runs", r.when)

    @unittest.skipUnless(shutil.which("gnuplot"), "gnuplot is missing "
                         "(make bench installs gnuplot-nox)")
    def test_svgs(self):
        out = subprocess.run([sys.executable, PLOT, self.dir], capture_output=True,
                             text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        want = {"relay-throughput.svg": ["Ferry", "floor", "P=10 plain"],
                "relay-latency.svg": ["p99 latency", "1000×60 Hz TLS"],
                "relay-cdf.svg": ["99.99", "max", "Tornado"],
                "tls.svg": ["hitch", "TLS 1.3 server CPU per handshake"],
                "memory.svg": ["hitch, TLS"]}
        for name, words in want.items():
            path = os.path.join(self.dir, name)
            ET.parse(path)
            with open(path, encoding="utf-8") as f:
                svg = f.read()
            for w in words:
                self.assertIn(w, svg, name)
            self.assertNotIn("ferry-plot-", svg.replace(self.dir, ""), name)
            self.assertNotIn(tempfile.gettempdir() + "/", svg, name)
            # Every figure says when and how it was measured.
            self.assertIn("make bench, 2026-12-03 12:39 UTC", svg, name)


if __name__ == "__main__":
    unittest.main()
