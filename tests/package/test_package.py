#!/usr/bin/env python3
"""The Debian package (make test-package; not part of make test).

Builds the package of debian/ from a copy of the source tree (what git
tracks and would track) with `dpkg-buildpackage -us -uc -b`, then:

  contents   dpkg-deb --contents is exactly the expected files, modes and
             owners; /etc/ferry/ferry.conf and /etc/logrotate.d/ferry are
             the only conffiles; the
             Depends name what the program needs;
  lintian    no error and no warning;
  extracted  dpkg-deb -x, and the extracted ferry passes --check on the
             extracted default configuration (which needs no file of the
             source tree);
  chroot     (as root, with debootstrap) in a fresh Debian minbase made by
             debootstrap (kept in BUILD/package/base, copied for each run):
             the package's dependencies from apt, then dpkg -i: the ferry
             user, the key directory, the unit enabled, --check as the
             ferry user, and the installed ferry relaying frames between
             the installed ferry-client's producer and consumer, as the
             ferry user, in a network namespace of its own; dpkg -r leaves
             the conffile only; dpkg -P leaves the root as it was before
             the install, but for the ferry user (Debian keeps system
             users).

Every process is started here and waited for with a time limit; the
throwaway root is deleted at the end.  Prints "N passed, N failed".
"""
import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"

# The files the package holds, and their modes (all root:root).
FILES = {
    "./etc/ferry/ferry.conf": 0o644,
    "./etc/logrotate.d/ferry": 0o644,
    "./lib/systemd/system/ferry.service": 0o644,
    "./usr/bin/ferry-bench": 0o755,
    "./usr/bin/ferry-client": 0o755,
    "./usr/lib/sysusers.d/ferry.conf": 0o644,
    "./usr/lib/tmpfiles.d/ferry.conf": 0o644,
    "./usr/sbin/ferry": 0o755,
    "./usr/share/doc/ferry/README.md.gz": 0o644,
    "./usr/share/doc/ferry/changelog.gz": 0o644,
    "./usr/share/doc/ferry/copyright": 0o644,
    "./usr/share/doc/ferry/examples/ferry.conf.example": 0o644,
    "./usr/share/doc/ferry/operations.md.gz": 0o644,
    "./usr/share/doc/ferry/protocol.md.gz": 0o644,
    "./usr/share/man/man1/ferry-bench.1.gz": 0o644,
    "./usr/share/man/man1/ferry-client.1.gz": 0o644,
    "./usr/share/man/man5/ferry.conf.5.gz": 0o644,
    "./usr/share/man/man8/ferry.8.gz": 0o644,
}

OUT = None       # BUILD/package: the copy, the .deb, the base root


def run(argv, timeout=600, check=True, **kw):
    """Runs argv; its output; fails the test with the output if check."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (
            " ".join(argv), p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def copy_source(dst):
    """The files git tracks, and those it would (not ignored), into dst."""
    names = run(["git", "-C", ROOT, "ls-files", "-z", "-c", "-o",
                 "--exclude-standard"]).stdout.split("\0")
    for name in names:
        if not name or name.startswith("build/"):
            continue
        src = os.path.join(ROOT, name)
        if not os.path.lexists(src):     # deleted, not yet committed
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, name), follow_symlinks=False)


class Package:
    deb = None
    changes = None
    version = None


def setUpModule():
    """Builds the package once, into OUT."""
    src = os.path.join(OUT, "src")
    shutil.rmtree(src, ignore_errors=True)
    for f in os.listdir(OUT) if os.path.isdir(OUT) else ():
        if f.startswith("ferry") and f.endswith((".deb", ".changes", ".buildinfo")):
            os.unlink(os.path.join(OUT, f))
    os.makedirs(src)
    copy_source(src)
    with open(os.path.join(ROOT, "VERSION")) as f:
        Package.version = f.read().strip()
    print("test-package: dpkg-buildpackage -us -uc -b in %s" % src, flush=True)
    start = time.monotonic()
    p = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, check=False,
            timeout=1200)
    with open(os.path.join(OUT, "build.log"), "w") as f:
        f.write(p.stdout + p.stderr)
    if p.returncode != 0:
        raise AssertionError("dpkg-buildpackage exited %d (log: %s):\n%s" % (
            p.returncode, os.path.join(OUT, "build.log"), (p.stdout + p.stderr)[-3000:]))
    print("test-package: built in %.0f s" % (time.monotonic() - start), flush=True)
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    Package.deb = os.path.join(OUT, "ferry_%s_%s.deb" % (Package.version, arch))
    Package.changes = os.path.join(OUT, "ferry_%s_%s.changes" % (Package.version, arch))
    shutil.rmtree(src, ignore_errors=True)


class Contents(unittest.TestCase):
    def test_files_modes_owners(self):
        out = run(["dpkg-deb", "--contents", Package.deb]).stdout
        files = {}
        for line in out.splitlines():
            perms, owner, _size, _date, _time, path = line.split(None, 5)
            self.assertEqual(owner, "root/root", line)
            if perms.startswith("d"):
                continue
            self.assertEqual(perms[0], "-", line)
            mode = sum(0o400 >> i for i, c in enumerate(perms[1:10]) if c != "-")
            files[path] = mode
        self.assertEqual(files, FILES)

    def test_control(self):
        fields = run(["dpkg-deb", "-f", Package.deb, "Package", "Version",
                      "Depends"]).stdout
        self.assertIn("Package: ferry\n", fields)
        self.assertIn("Version: %s\n" % Package.version, fields)
        depends = fields.split("Depends:", 1)[1]
        for dep in ("python3", "systemd | systemd-standalone-sysusers",
                    "libssl3", "libev4", "libinih1", "libc6"):
            self.assertIn(dep, depends)
        with tempfile.TemporaryDirectory() as ctl:
            run(["dpkg-deb", "-e", Package.deb, ctl])
            with open(os.path.join(ctl, "conffiles")) as f:
                self.assertEqual(sorted(f.read().splitlines()),
                                 ["/etc/ferry/ferry.conf",
                                  "/etc/logrotate.d/ferry"])
            with open(os.path.join(ctl, "postinst")) as f:
                postinst = f.read()
        # The user before the directory that belongs to its group.
        self.assertLess(postinst.index("systemd-sysusers"),
                        postinst.index("systemd-tmpfiles"))
        self.assertIn("deb-systemd-helper enable 'ferry.service'", postinst)

    def test_changelog_version_is_the_source_version(self):
        with open(os.path.join(ROOT, "debian", "changelog")) as f:
            first = f.readline()
        self.assertEqual(first.split()[:2], ["ferry", "(%s)" % Package.version])


class Lintian(unittest.TestCase):
    def test_no_error_or_warning(self):
        p = run(["lintian", "--display-info", Package.changes], check=False)
        tags = [l for l in p.stdout.splitlines() if re.match(r"^[EWIPX]: ", l)]
        print("\n".join(["lintian:"] + tags), flush=True)
        bad = [t for t in tags if t.startswith(("E:", "W:"))]
        self.assertEqual(bad, [])
        self.assertEqual(p.returncode, 0, p.stderr)


class Extracted(unittest.TestCase):
    def test_ferry_checks_its_default_configuration(self):
        with tempfile.TemporaryDirectory(prefix="ferry-deb-") as x:
            run(["dpkg-deb", "-x", Package.deb, x])
            conf = os.path.join(x, "etc/ferry/ferry.conf")
            p = run([os.path.join(x, "usr/sbin/ferry"), "--check", "-c", conf],
                    check=False, cwd=x)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout, "%s: OK (1 listeners)\n" % conf)
            with open(conf) as f:
                text = f.read()
            self.assertNotIn("certs/", text)
            self.assertIn("\nbind = 127.0.0.1:8888\n", text)
            with open(os.path.join(x, "lib/systemd/system/ferry.service")) as f:
                unit = f.read()
            self.assertIn("\nExecStart=/usr/sbin/ferry -c /etc/ferry/ferry.conf\n",
                          unit)
            if shutil.which("systemd-analyze"):
                # Verified where its paths exist: the extracted tree's.
                fixed = unit.replace("/usr/sbin/ferry",
                                     os.path.join(x, "usr/sbin/ferry"))
                path = os.path.join(x, "ferry.service")
                with open(path, "w") as f:
                    f.write(fixed)
                v = run(["systemd-analyze", "verify", "--man=no", path], check=False)
                self.assertEqual(v.returncode, 0, v.stdout + v.stderr)


# ---- a throwaway Debian root ----

def base_root():
    """A debootstrap'ed minbase, made once and kept (BUILD/package/base)."""
    base = os.path.join(OUT, "base")
    stamp = base + ".ok"
    if os.path.exists(stamp) and os.path.isdir(base):
        return base
    tmp = base + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    if os.path.exists(stamp):
        os.unlink(stamp)
    print("test-package: debootstrap --variant=minbase %s (once)" % SUITE, flush=True)
    run(["debootstrap", "--variant=minbase", SUITE, tmp, MIRROR], timeout=1800)
    os.rename(tmp, base)
    open(stamp, "w").close()
    return base


# Runs "$@" chrooted into $0, with /proc of a mount namespace of its own
# (nothing is left mounted whatever happens).
CHROOT = ('mount -t proc proc "$0/proc" && exec chroot "$0" "$@"')

# Inside the chroot: the installed ferry, as the ferry user, on its default
# configuration, in a network namespace of its own (loopback brought up
# here: the minbase has no ip(8)); the installed ferry-client's producer
# and consumer relay frames through it.
SMOKE = r"""
set -e
python3 - <<'EOF'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS: UP|LOOPBACK|RUNNING
EOF
setpriv --reuid=ferry --regid=ferry --clear-groups \
    /usr/sbin/ferry -c /etc/ferry/ferry.conf 2>/tmp/ferry.log &
pid=$!
i=0
until grep -q 'ready: worker 0' /tmp/ferry.log; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat /tmp/ferry.log; exit 1; }; sleep 0.1
done
ferry-client produce --uuid pkg-1 --keys a,b --rate 20 --count 100 &
prod=$!
i=0
until ferry-client consume --uuid pkg-1 --count 3 >/tmp/consumed 2>/tmp/consume.err; do
    i=$((i + 1)); [ $i -lt 50 ] || { cat /tmp/consume.err; exit 1; }; sleep 0.1
done
kill $prod; wait $prod || true
kill -TERM $pid; wait $pid
cat /tmp/consumed
echo '--- log'
cat /tmp/ferry.log
"""


def snapshot(root):
    """{path: (kind, mode, uid, gid, size)} of a root, less what the
    package manager and the kernel churn (apt's and dpkg's state, logs,
    caches, /proc, /dev, /tmp)."""
    skip = {"proc", "dev", "sys", "run", "tmp", "var/cache", "var/log",
            "var/lib/apt", "var/lib/dpkg"}
    found = {}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        dirs[:] = [x for x in dirs if os.path.normpath(os.path.join(rel, x))
                   not in skip]
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            found[os.path.relpath(p, root)] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                st.st_gid, st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return found


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("debootstrap")
                     and shutil.which("unshare"),
                     "needs root, debootstrap and unshare")
class Chroot(unittest.TestCase):
    def sh(self, script, netns=False, check=True, timeout=600):
        argv = ["unshare", "--mount", "--propagation", "private"]
        if netns:
            argv.append("--net")
        return run(argv + ["sh", "-c", CHROOT, self.root, "sh", "-c", script],
                   check=check, timeout=timeout)

    def setUp(self):
        base = base_root()
        self.tmp = tempfile.mkdtemp(prefix="ferry-chroot-", dir=OUT)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.root = os.path.join(self.tmp, "root")
        print("test-package: copying the base root", flush=True)
        run(["cp", "-a", base, self.root])

    def test_install_run_remove_purge(self):
        root = self.root
        # No service starts in here (there is no systemd running anyway).
        with open(os.path.join(root, "usr/sbin/policy-rc.d"), "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(os.path.join(root, "usr/sbin/policy-rc.d"), 0o755)
        shutil.copy(Package.deb, os.path.join(root, "tmp/ferry.deb"))
        # The dependencies from apt first (the first of each alternative),
        # so that what dpkg -P must undo is the package's alone.
        depends = run(["dpkg-deb", "-f", Package.deb, "Depends"]).stdout
        deps = [re.sub(r"\s*\(.*", "", alt.split("|")[0]).strip()
                for alt in depends.split(",")]
        print("test-package: apt-get install %s (in the root)" % " ".join(deps),
              flush=True)
        self.sh("export DEBIAN_FRONTEND=noninteractive; apt-get -qq update && "
                "apt-get -qq install -y --no-install-recommends %s >/dev/null"
                % " ".join(deps), timeout=1800)
        before = snapshot(root)

        self.sh("dpkg -i /tmp/ferry.deb")
        passwd = self.sh("getent passwd ferry").stdout.strip().split(":")
        self.assertEqual(passwd[5:], ["/nonexistent", "/usr/sbin/nologin"])
        gid = int(self.sh("getent group ferry").stdout.split(":")[2])
        st = os.lstat(os.path.join(root, "etc/ferry/tls"))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid),
                         (0o2750, 0, gid))
        wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants/"
                             "ferry.service")
        self.assertEqual(os.readlink(wants), "/lib/systemd/system/ferry.service")
        out = self.sh("setpriv --reuid=ferry --regid=ferry --clear-groups "
                      "ferry --check -c /etc/ferry/ferry.conf").stdout
        self.assertEqual(out, "/etc/ferry/ferry.conf: OK (1 listeners)\n")

        smoke = self.sh(SMOKE, netns=True, timeout=120).stdout
        consumed, log = smoke.split("--- log\n")
        self.assertEqual(consumed.splitlines()[0], "a,b", smoke)
        self.assertEqual(len(consumed.splitlines()), 4, smoke)
        self.assertIn("relay listening on 127.0.0.1:8888 (tcp) [devices]", log)
        self.assertRegex(log, r"consumer 127\.0\.0\.1:\d+ joined uuid 'pkg-1'")

        self.sh("dpkg -r ferry")
        self.assertFalse(os.path.lexists(os.path.join(root, "usr/sbin/ferry")))
        self.assertTrue(os.path.exists(os.path.join(root, "etc/ferry/ferry.conf")),
                        "the conffile stays until purge")

        self.sh("dpkg -P ferry")
        after = snapshot(root)
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(p for p in set(before) & set(after)
                         if before[p] != after[p])
        # The ferry user stays, as Debian keeps system users; sysusers
        # keeps the old account files as FILE-.
        accounts = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"}
        self.assertEqual([p for p in added if p.rstrip("-") not in accounts], [],
                         "left behind by purge")
        self.assertEqual(removed, [], "removed by the package")
        self.assertEqual([p for p in changed if p.rstrip("-") not in accounts
                          and p != "etc"], [])
        self.assertEqual([p for p in after if "ferry" in p], [])


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="the Makefile's BUILD")
    args, rest = ap.parse_known_args()
    OUT = os.path.join(os.path.abspath(args.build), "package")
    os.makedirs(OUT, exist_ok=True)
    prog = unittest.main(module=__name__, argv=[sys.argv[0]] + rest, exit=False,
                         verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("test-package: %d passed, %d failed, %d skipped" % (
        r.testsRun - failed - len(r.skipped), failed, len(r.skipped)))
    return 0 if r.wasSuccessful() and r.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
