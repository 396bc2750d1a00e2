"""make install and make uninstall, into temporary directories.

Install puts exactly the expected files, with their modes, where PREFIX
and DESTDIR say (the unit's and the default configuration's paths
follow PREFIX); the installed ferry passes --check on the installed
default configuration; the unit verifies (systemd-analyze) and the
sysusers.d and tmpfiles.d snippets make the ferry user and the key
directory in a throwaway root, where systemd's tools are here; uninstall
removes every file install put, and the directories of ferry's own, and
keeps a configuration the operator changed.

`make test` says how it was invoked (FERRY_MAKE_VARS: BUILD and
SANITIZE), so that the make run here finds the programs already built.
"""
import filecmp
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAKE_VARS = os.environ.get("FERRY_MAKE_VARS", "").split()


def expected(prefix, etc):
    """The files install puts under PREFIX (relative, as in DESTDIR), and
    their modes."""
    p = prefix.lstrip("/")
    e = etc.lstrip("/")
    return {
        f"{p}/sbin/ferry": 0o755,
        f"{p}/bin/ferry-client": 0o755,
        f"{p}/bin/ferry-bench": 0o755,
        f"{p}/share/man/man1/ferry-client.1": 0o644,
        f"{p}/share/man/man1/ferry-bench.1": 0o644,
        f"{p}/share/man/man5/ferry.conf.5": 0o644,
        f"{p}/share/man/man8/ferry.8": 0o644,
        f"{p}/share/doc/ferry/examples/ferry.conf.example": 0o644,
        f"{p}/lib/systemd/system/ferry.service": 0o644,
        f"{p}/lib/sysusers.d/ferry.conf": 0o644,
        f"{p}/lib/tmpfiles.d/ferry.conf": 0o644,
        f"{e}/ferry/ferry.conf": 0o644,
        f"{e}/logrotate.d/ferry": 0o644,
    }


def tree(root):
    """{relative path: mode} of every file and link under root."""
    found = {}
    for d, dirs, files in os.walk(root):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            path = os.path.join(d, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def dirs_named_ferry(root):
    return [os.path.relpath(d, root) for d, _, _ in os.walk(root)
            if "ferry" in os.path.basename(d)]


def make(*args):
    # Not the jobserver of the make that runs the tests.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "--no-print-directory", "-C", ROOT] + MAKE_VARS +
                          list(args), capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def build_dir():
    """Where make puts the programs for MAKE_VARS (BUILD, /sanitize)."""
    vars_ = dict(v.split("=", 1) for v in MAKE_VARS if "=" in v)
    build = os.path.join(ROOT, vars_.get("BUILD") or "build")
    if vars_.get("SANITIZE") == "1":
        build = os.path.join(build, "sanitize")
    return build


class Install(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-install-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_install_then_uninstall_leaves_nothing(self):
        dest = os.path.join(self.tmp, "dest")
        make("install", "DESTDIR=" + dest)
        want = expected("/usr/local", "/usr/local/etc")
        self.assertEqual(tree(dest), want)
        self.assertTrue(filecmp.cmp(os.path.join(build_dir(), "ferry"),
                                    os.path.join(dest, "usr/local/sbin/ferry"),
                                    shallow=False))
        make("uninstall", "DESTDIR=" + dest)
        self.assertEqual(tree(dest), {}, "files left after uninstall")
        self.assertEqual(dirs_named_ferry(dest), [])

    def test_paths_follow_prefix(self):
        dest = os.path.join(self.tmp, "dest")
        make("install", "DESTDIR=" + dest, "PREFIX=/usr",
             "UNITDIR=/lib/systemd/system")
        files = tree(dest)
        self.assertIn("usr/sbin/ferry", files)
        self.assertIn("etc/ferry/ferry.conf", files)
        self.assertIn("lib/systemd/system/ferry.service", files)
        with open(os.path.join(dest, "lib/systemd/system/ferry.service")) as f:
            unit = f.read()
        self.assertIn("\nExecStart=/usr/sbin/ferry -c /etc/ferry/ferry.conf\n", unit)
        self.assertIn("\nExecStartPre=/usr/sbin/ferry --check -c "
                      "/etc/ferry/ferry.conf\n", unit)
        with open(os.path.join(dest, "usr/lib/tmpfiles.d/ferry.conf")) as f:
            self.assertIn("d /etc/ferry/tls 2750 root ferry -", f.read())
        with open(os.path.join(dest, "etc/ferry/ferry.conf")) as f:
            conf = f.read()
        self.assertIn("/usr/share/doc/ferry/examples/ferry.conf.example", conf)
        for rel in files:
            path = os.path.join(dest, rel)
            if files[rel] == 0o644:
                with open(path, "rb") as f:
                    self.assertNotIn(b"@SYSCONFDIR@", f.read(), rel)
        make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr",
             "UNITDIR=/lib/systemd/system")
        self.assertEqual(tree(dest), {})

    def test_installed_default_configuration_checks(self):
        # No DESTDIR: the paths in the unit and the file are real.
        prefix = os.path.join(self.tmp, "prefix")
        make("install", "PREFIX=" + prefix)
        conf = os.path.join(prefix, "etc/ferry/ferry.conf")
        ferry = os.path.join(prefix, "sbin/ferry")
        proc = subprocess.run([ferry, "--check", "-c", conf], capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, f"{conf}: OK (1 listeners)\n")
        client = subprocess.run([os.path.join(prefix, "bin/ferry-client"), "--help"],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(client.returncode, 0, client.stderr)
        if shutil.which("systemd-analyze"):
            unit = os.path.join(prefix, "lib/systemd/system/ferry.service")
            v = subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        make("uninstall", "PREFIX=" + prefix)
        self.assertEqual(tree(prefix), {})

    @unittest.skipUnless(shutil.which("systemd-sysusers") and
                         shutil.which("systemd-tmpfiles"),
                         "systemd-sysusers or systemd-tmpfiles missing")
    def test_sysusers_and_tmpfiles_snippets(self):
        dest = os.path.join(self.tmp, "dest")
        make("install", "DESTDIR=" + dest, "PREFIX=/usr")
        root = os.path.join(self.tmp, "root")
        os.makedirs(os.path.join(root, "etc"))
        subprocess.run(["systemd-sysusers", "--root=" + root,
                        os.path.join(dest, "usr/lib/sysusers.d/ferry.conf")],
                       check=True, capture_output=True, timeout=60)
        with open(os.path.join(root, "etc/passwd")) as f:
            users = {line.split(":")[0]: line.strip().split(":") for line in f}
        self.assertIn("ferry", users)
        self.assertEqual(users["ferry"][5:], ["/nonexistent", "/usr/sbin/nologin"])
        with open(os.path.join(root, "etc/group")) as f:
            gid = {line.split(":")[0]: int(line.split(":")[2]) for line in f}["ferry"]
        subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create",
                        os.path.join(dest, "usr/lib/tmpfiles.d/ferry.conf")],
                       check=True, capture_output=True, timeout=60)
        st = os.stat(os.path.join(root, "etc/ferry/tls"))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o2750)
        self.assertEqual((st.st_uid, st.st_gid), (0, gid))

    def test_a_changed_configuration_is_kept(self):
        dest = os.path.join(self.tmp, "dest")
        conf = os.path.join(dest, "usr/local/etc/ferry/ferry.conf")
        make("install", "DESTDIR=" + dest)
        with open(conf, "a") as f:
            f.write("; mine\n")
        out = make("install", "DESTDIR=" + dest)
        self.assertIn("install: keeping " + conf, out)
        out = make("uninstall", "DESTDIR=" + dest)
        self.assertIn("uninstall: keeping " + conf + " (changed)", out)
        self.assertEqual(tree(dest), {"usr/local/etc/ferry/ferry.conf": 0o644})
        with open(conf) as f:
            self.assertTrue(f.read().endswith("; mine\n"))


if __name__ == "__main__":
    unittest.main()
