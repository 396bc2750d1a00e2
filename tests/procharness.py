"""procharness: the processes the bench runner and the soak start.

One way to start a program here (its output in files under a temporary
directory, dying with the runner through PR_SET_PDEATHSIG), to wait for it
to be ready (a line in its output or log, or a port that answers), to read
what it uses (/proc: CPU, resident memory, of it and its children), to read
ferry's admin page, and to stop it: by its PID, SIGTERM then SIGKILL, never
by name.  tests/bench/run.py and tests/soak/soak.py use it.  Linux, Python 3
standard library only.
"""

import ctypes
import os
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """In the child: SIGKILL when the runner goes (Linux)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_setup():
    """In the child: die with the runner, and use every descriptor allowed."""
    die_with_parent()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- /proc ------------------------------------------------------------------

def _proc_stat(pid):
    """Fields of /proc/PID/stat after the command name, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def proc_tree(pid):
    """pid and all its descendants (from the ppid field of /proc/*/stat)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _proc_stat(int(d))
        if st is not None:
            children.setdefault(int(st[1]), []).append(int(d))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid):
    """utime+stime of pid and its descendants, with reaped children."""
    ticks = 0
    for p in proc_tree(pid):
        st = _proc_stat(p)
        if st is not None:
            # after the name: state=0 ppid=1 ... utime=11 stime=12
            # cutime=13 cstime=14 (stat fields 14..17)
            ticks += sum(int(x) for x in st[11:15])
    return ticks / CLK_TCK


def _statm_rss_kb(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE_KB


def rss_kb(pid, tree=True):
    """Resident set in KiB (from statm): of pid and its descendants, or
    with tree=False of pid alone, -1 when it is gone."""
    if not tree:
        try:
            return _statm_rss_kb(pid)
        except OSError:
            return -1
    total = 0
    for p in proc_tree(pid):
        try:
            total += _statm_rss_kb(p)
        except OSError:
            pass
    return total


# ---- ports, files, the admin page ------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_file(path, pattern, timeout, alive=None, poll=0.05):
    """The first match of `pattern` (multi-line) in the file at `path`,
    waiting up to `timeout` s; None then, or as soon as alive() is false."""
    end = time.monotonic() + timeout
    rx = re.compile(pattern, re.M)
    while time.monotonic() < end:
        m = rx.search(read_text(path))
        if m:
            return m
        if alive is not None and not alive():
            return None
        time.sleep(poll)
    return None


def tail(path, lines=30):
    return "".join(read_text(path).splitlines(True)[-lines:])


def metrics(admin_port):
    """Ferry's admin page as {series: value}; {} if it does not answer."""
    try:
        with urllib.request.urlopen(
                "http://127.0.0.1:%d/metrics" % admin_port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


# ---- processes --------------------------------------------------------------

class Harness:
    """The processes one runner starts, and the directory of their output.

    pin: whether Proc's `cpu` pins a process to a core with taskset."""

    def __init__(self, prefix, pin=False):
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.pin = pin

    def path(self, name):
        return os.path.join(self.tmp, name)

    def stop_all(self):
        """Stops every process started here, the last started first."""
        for p in reversed(self.procs):
            p.stop()
        self.procs = []


class Proc:
    """A process started here, stopped by its PID.

    Its stdout and stderr go to files in the harness's directory (with
    merge=True both into the first); it dies with the runner."""

    def __init__(self, harness, name, argv, cpu=None, env=None, merge=False):
        self.name = name
        self.out = os.path.join(harness.tmp,
                                "%s-%d.out" % (name, len(harness.procs)))
        self.err = self.out if merge else self.out[:-4] + ".err"
        if cpu is not None and harness.pin:
            argv = ["taskset", "-c", str(cpu)] + argv
        with open(self.out, "w") as o, \
                open(os.devnull if merge else self.err, "w") as e:
            self.p = subprocess.Popen(argv, stdout=o,
                                      stderr=subprocess.STDOUT if merge else e,
                                      stdin=subprocess.DEVNULL,
                                      preexec_fn=child_setup, env=env)
        self.pid = self.p.pid
        harness.procs.append(self)

    def alive(self):
        return self.p.poll() is None

    def text(self, which="out"):
        return read_text(self.out if which == "out" else self.err)

    def wait_line(self, pattern, timeout=15.0, which="out"):
        """The first match of pattern in the output, or None."""
        return wait_file(self.out if which == "out" else self.err, pattern,
                         timeout, self.alive)

    def wait_port(self, port, timeout=15.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                return False
            if port_open(port):
                return True
            time.sleep(0.05)
        return False

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=10.0):
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.p.wait()

    def why(self):
        """A short reason for a failed start."""
        lines = (self.text("err") + self.text("out")).strip().splitlines()
        return lines[-1][:160] if lines else "exited %s" % self.p.poll()
