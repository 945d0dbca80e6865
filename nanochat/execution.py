"""
Run untrusted, model-generated Python (HumanEval, MBPP) in a separate, limited process.

    from nanochat.execution import execute_code
    r = execute_code("print(1 + 1)", timeout=5.0, memory_mb=512)
    r.passed, r.stdout   # True, "2\n"

Checking a HumanEval problem (program + tests + check(entry_point)) is the tasks' job; they build one program
text and call execute_code on it.

What each run gets
------------------
- A fresh interpreter in its own session/process group (setsid), stdin closed, the environment reduced to an
  allow-list (PATH, LANG, HOME and TMPDIR = the working directory): no secrets from the parent's environment.
- A new temporary working directory (owned by the sandbox uid, mode 700), deleted afterwards.
- Resource limits set before the program starts: address space (memory_mb), CPU seconds (timeout + 1),
  processes (max_processes), file size (max_file_mb), open files (max_open_files), no core dumps. They are
  applied by a tiny launcher (LIMITS_LAUNCHER below) that then execs the program, instead of a preexec_fn,
  because preexec_fn is unsafe when the caller has threads.
- When the parent runs as root (this machine, CI, most containers) the child is started under a fresh
  unprivileged uid drawn at random from a high range, never a real user. That is what makes RLIMIT_NPROC mean
  something (root ignores it), and because no other process owns that uid, "kill every process of this uid"
  (kill(-1) issued as that uid) reliably ends grandchildren that escaped the process group with setsid.
  If the system refuses such uids (some user namespaces), we fall back to `nobody` and skip that sweep.
  The sandboxed interpreter must be executable by that uid: sys.executable if it is (a pyenv under /root is
  not), else the system python3, or NANOCHAT_SANDBOX_PYTHON. The program sees only the standard library.
- A wall-clock timeout: on expiry the whole process group is SIGKILLed (plus the uid sweep above).
- stdout/stderr read in chunks and kept up to max_output_bytes each; the rest is read and discarded (so the
  child never blocks on a full pipe and the parent's memory stays flat); truncated=True says so.
- strict=True (needs bubblewrap, Debian package `bubblewrap`) adds: new user/pid/net/ipc/uts namespaces (no
  network at all; everything in the pid namespace dies with it), a read-only view of the whole file system
  except the working directory, and a private empty /tmp.

What is NOT protected
---------------------
- Without strict: the program can read any world-readable file, write to world-writable places (/tmp,
  /dev/shm; each file capped by RLIMIT_FSIZE), and use the network. When not root, RLIMIT_NPROC counts all
  of your user's processes and there is no uid sweep, so a setsid'ed grandchild can outlive the timeout
  (it keeps its RLIMIT_CPU, so it cannot spin forever).
- Address-space limits cap virtual memory, not RSS; there is no cgroup, so disk bandwidth, total disk use
  across many files, and CPU share are not limited. Kernel exploits are out of scope: for hostile code at
  scale, use a VM or gVisor-style isolation.
"""
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

SANDBOX_UID_RANGE = (1_900_000_000, 2_000_000_000)  # fresh uids for sandboxed runs when we are root
NOBODY = 65534

# The launcher runs as the sandbox uid: lower the limits (no privilege needed), then exec the real command.
# argv: launcher LIMITS_JSON CMD...
LIMITS_LAUNCHER = r"""
import json, os, resource, sys
for name, value in json.loads(sys.argv[1]).items():
    resource.setrlimit(getattr(resource, name), (value, value))
os.execvp(sys.argv[2], sys.argv[2:])
"""


@dataclass
class ExecutionResult:
    passed: bool  # exited with status 0 within the timeout
    timed_out: bool
    memory_exceeded: bool  # MemoryError under the address-space limit
    stdout: str
    stderr: str
    truncated: bool  # stdout or stderr exceeded max_output_bytes and was cut
    returncode: int | None
    duration_s: float
    strict: bool


# -----------------------------------------------------------------------------
# finding a uid and an interpreter that work together (probed once per process)


def _is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _candidate_pythons():
    seen = []
    for p in (os.environ.get("NANOCHAT_SANDBOX_PYTHON"), sys.executable, shutil.which("python3", path="/usr/bin:/bin"),
              "/usr/local/bin/python3"):
        if p and os.path.exists(p) and p not in seen:
            seen.append(p)
    return seen


def _runs_as(python, uid):
    kwargs = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
    try:
        r = subprocess.run([python, "-I", "-B", "-c", "import resource, json"], cwd="/", env={"PATH": "/usr/bin:/bin"},
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30, **kwargs)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@lru_cache(maxsize=1)
def _sandbox_setup():
    """(python, uid_mode) with uid_mode in {"fresh", "nobody", None (not root: run as ourselves)}."""
    if not _is_root():
        return sys.executable, None
    for mode, uid in (("fresh", SANDBOX_UID_RANGE[0]), ("nobody", NOBODY)):
        for python in _candidate_pythons():
            if _runs_as(python, uid):
                return python, mode
    raise RuntimeError("no Python interpreter can be run by an unprivileged uid (the sandbox refuses to run code as "
                       "root); set NANOCHAT_SANDBOX_PYTHON to a python3 under world-readable directories")


@lru_cache(maxsize=1)
def strict_available():
    """(ok, reason): whether strict mode (bubblewrap) works here. Probed once per process."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap is not installed (apt-get install bubblewrap)"
    r = execute_code("print('ok')", timeout=20, strict=True, _check_strict=False)
    if r.stdout.strip() != "ok":
        return False, f"bubblewrap cannot create namespaces here: {r.stderr.strip()[:200]}"
    return True, ""


# -----------------------------------------------------------------------------
# running


def _read_capped(proc, cap, deadline):
    """
    Read stdout and stderr until both close or the deadline passes, keeping at most cap bytes of each.
    Returns (out, err, truncated, hit_deadline). Also returns early (draining what is already there) once the
    main process has exited, so a lingering background grandchild holding the pipes cannot stall us.
    """
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ)
    truncated, hit_deadline, exited_at = False, False, None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            hit_deadline = True
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break  # main process is gone; whatever still holds the pipes gets killed by the caller
        for key, _ in sel.select(timeout=min(0.05, deadline - now)):
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.fd]
            room = cap - len(buf)
            if len(chunk) > room:
                truncated = True
            if room > 0:
                buf += chunk[:room]  # beyond the cap: read and drop, so the child never blocks on a full pipe
    sel.close()
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), truncated, hit_deadline


def _kill_everything(proc, python, uid, sweep):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session/process group
    except (ProcessLookupError, PermissionError):
        pass
    if sweep:
        # kill(-1) as the sandbox uid signals every process of that uid (but not itself): grandchildren that
        # left the process group with setsid, and anything a fork bomb managed to start.
        subprocess.run([python, "-I", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
                       user=uid, group=uid, extra_groups=[], stdin=subprocess.DEVNULL, capture_output=True, cwd="/",
                       env={})
    proc.wait()


def _bwrap_prefix(workdir):
    return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--bind", workdir, workdir, "--chdir", workdir,
            "--unshare-all", "--die-with-parent", "--new-session", "--"]


def execute_code(code, timeout=5.0, memory_mb=512, strict=False, max_output_bytes=1 << 20, max_processes=32,
                 max_file_mb=16, max_open_files=64, _check_strict=True):
    """Run `code` as a Python program under the limits described in the module docstring."""
    if not isinstance(code, str):
        raise TypeError(f"execute_code needs the program as a str, got {type(code).__name__}")
    if strict and _check_strict:
        ok, why = strict_available()
        if not ok:
            raise RuntimeError(f"execute_code(strict=True) is unavailable: {why}; or pass strict=False")
    python, uid_mode = _sandbox_setup()
    uid = {"fresh": random.randrange(*SANDBOX_UID_RANGE), "nobody": NOBODY, None: None}[uid_mode]
    workdir = tempfile.mkdtemp(prefix="nanochat_sandbox_")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            for p in (workdir, os.path.join(workdir, "program.py")):
                os.chown(p, uid, uid)
        os.chmod(workdir, 0o700)

        limits = {
            "RLIMIT_AS": memory_mb * 2**20,
            "RLIMIT_CPU": int(timeout) + 1,
            "RLIMIT_NPROC": max_processes,
            "RLIMIT_FSIZE": max_file_mb * 2**20,
            "RLIMIT_NOFILE": max_open_files,
            "RLIMIT_CORE": 0,
        }
        program = [python, "-I", "-B", "program.py"]
        if strict:
            program = _bwrap_prefix(workdir) + program
        cmd = [python, "-I", "-B", "-c", LIMITS_LAUNCHER, json.dumps(limits)] + program
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        ids = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}

        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **ids)
        try:
            out, err, truncated, timed_out = _read_capped(proc, max_output_bytes, t0 + timeout)
        finally:
            _kill_everything(proc, python, uid, sweep=uid_mode == "fresh")
            proc.stdout.close()
            proc.stderr.close()
        duration = time.monotonic() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    rc = proc.returncode
    memory_exceeded = (not timed_out) and rc != 0 and "MemoryError" in stderr
    return ExecutionResult(passed=(not timed_out) and rc == 0, timed_out=timed_out, memory_exceeded=memory_exceeded,
                           stdout=stdout, stderr=stderr, truncated=truncated, returncode=rc, duration_s=duration,
                           strict=strict)
