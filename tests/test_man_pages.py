"""The man pages: each renders with man(1) without a warning, nothing of
its source is lost on the way (scdoc drops what it cannot parse), and
they document what the programs have: every option of `ferry --help`,
every command and option of `ferry_client.py --help`, every mode and
option of `ferry-bench --help`.  (Every
configuration key is held to ferry.conf(5) by tests/test_config.c.)

`make test` builds the pages into $(BUILD)/man and says where
(FERRY_MAN_DIR), and where ferry is (FERRY_BIN).
"""
import os
import re
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAN_DIR = os.environ.get("FERRY_MAN_DIR", os.path.join(ROOT, "build", "man"))
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))
CLIENT = os.path.join(ROOT, "scripts", "ferry_client.py")
PAGES = ("ferry.8", "ferry.conf.5", "ferry-client.1", "ferry-bench.1")
BENCH = os.environ.get("FERRY_BENCH_BIN", os.path.join(os.path.dirname(FERRY), "ferry-bench"))


def render(page):
    """(text, warnings) of `man --warnings -l` at 80 columns, without
    hyphenation (so that every word can be found whole)."""
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="",
               LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    proc = subprocess.run(["man", "--warnings", "--no-hyphenation", "--no-justification",
                           "-l", os.path.join(MAN_DIR, page)],
                          capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"man -l {page} exited {proc.returncode}: {proc.stderr}")
    # man prints bold and underline as overstrikes when not on a terminal
    # only if asked to; strip any that come through.
    text = re.sub(r".\x08", "", proc.stdout)
    return text, proc.stderr


def source(page):
    """The page's scdoc source, without its literal blocks."""
    with open(os.path.join(ROOT, "man", page + ".scd"), encoding="utf-8") as f:
        return re.sub(r"(?ms)^\t*```$.*?^\t*```$", "", f.read())


def help_options(argv):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", out)), out


class ManPages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("man") is None:
            raise AssertionError("man(1) is missing: scripts/install-deps.sh "
                                 "installs man-db")
        cls.text = {}
        for page in PAGES:
            path = os.path.join(MAN_DIR, page)
            if not os.path.exists(path):
                raise AssertionError(f"{path} is missing: `make` builds it")
            cls.text[page] = render(page)

    def test_render_without_warnings(self):
        for page in PAGES:
            text, warnings = self.text[page]
            self.assertEqual(warnings, "", f"{page}: {warnings}")
            name = page.rsplit(".", 1)[0].upper()
            self.assertTrue(text.startswith(f"{name}("), f"{page}: {text[:80]!r}")
            for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
                self.assertRegex(text, rf"(?m)^{section}$", f"{page} lacks {section}")

    def test_nothing_lost_in_rendering(self):
        # Every heading and every bold term at the start of a source line
        # (the keys, options and commands being defined) reaches the page.
        for page in PAGES:
            text = self.text[page][0]
            src = source(page)
            for heading in re.findall(r"(?m)^#+ (.+)$", src):
                found = re.search(rf"(?m)^ *{re.escape(heading)}$", text)
                self.assertTrue(found, f"{page}: heading '{heading}' not rendered")
            terms = re.findall(r"(?m)^\t*\*([^*\s]+)\*", src)
            self.assertGreater(len(terms), 10, page)
            flat = " ".join(text.split())
            for term in terms:
                term = term.replace("\\", "")
                self.assertTrue(term in flat, f"{page}: '{term}' not rendered")
            # The last line of the source's last paragraph is there too.
            last = [l for l in src.splitlines() if l.strip()][-1]
            words = re.sub(r"[*_]", "", last).split()[-2:]
            self.assertTrue(" ".join(words) in flat, f"{page}: ends early")

    def test_ferry_options_documented(self):
        if not os.access(FERRY, os.X_OK):
            self.skipTest(f"no ferry binary at {FERRY}")
        options, _ = help_options([FERRY, "--help"])
        self.assertIn("--check", options)
        text = " ".join(self.text["ferry.8"][0].split())
        for opt in sorted(options):
            self.assertTrue(opt in text, f"ferry(8) lacks {opt}")

    def test_client_commands_and_options_documented(self):
        options, out = help_options([sys.executable, CLIENT, "--help"])
        commands = re.findall(r"(?m)^    (\w+) {2,}", out)
        self.assertEqual(sorted(commands), ["consume", "produce", "record", "replay"])
        text = " ".join(self.text["ferry-client.1"][0].split())
        for cmd in commands:
            more, _ = help_options([sys.executable, CLIENT, cmd, "--help"])
            options |= more
            self.assertRegex(text, rf"\b{cmd}\b")
        options.discard("--help")
        self.assertGreater(len(options), 15)
        for opt in sorted(options):
            self.assertTrue(opt in text, f"ferry-client(1) lacks {opt}")

    def test_bench_modes_and_options_documented(self):
        if not os.access(BENCH, os.X_OK):
            self.skipTest(f"no ferry-bench binary at {BENCH}")
        out = subprocess.run([BENCH, "--help"], capture_output=True, text=True,
                             timeout=30).stdout + subprocess.run(
            [BENCH, "--help"], capture_output=True, text=True, timeout=30).stderr
        options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out))
        modes = re.findall(r"(?m)^  (\w+) {2,}", out)
        self.assertEqual(sorted(modes), ["bulk", "handshake", "idle", "relay", "sink"])
        self.assertGreater(len(options), 20)
        text = " ".join(self.text["ferry-bench.1"][0].split())
        for mode in modes:
            self.assertRegex(text, rf"\b{mode}\b")
        for opt in sorted(options):
            self.assertTrue(opt in text, f"ferry-bench(1) lacks {opt}")


if __name__ == "__main__":
    unittest.main()
