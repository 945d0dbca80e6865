"""
Tests for nanochat/execution.py: the code sandbox. Every attack here is bounded (a fixed number of forks, a
fixed output size) so that a weak sandbox fails the test instead of taking the machine down.
Run: python -m pytest tests/test_execution.py -q
"""
import os
import resource
import shutil
import subprocess
import tempfile
import time

import pytest

from nanochat.execution import execute_code, strict_available

IS_ROOT = os.geteuid() == 0


def test_runs_code_and_reports_status():
    r = execute_code("print(6 * 7)")
    assert r.passed and r.stdout == "42\n" and r.returncode == 0 and not r.truncated
    r = execute_code("raise ValueError('boom')")
    assert not r.passed and not r.timed_out and not r.memory_exceeded and "ValueError: boom" in r.stderr


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="str"):
        execute_code(b"print(1)")


@pytest.mark.skipif(not IS_ROOT, reason="the uid drop only happens when the parent is root")
def test_child_is_not_root():
    r = execute_code("import os; print(os.getuid(), os.getgid(), os.getgroups())")
    uid, gid, groups = r.stdout.split(" ", 2)
    assert int(uid) != 0 and int(gid) != 0 and groups.strip() == "[]"


def test_infinite_loop_times_out_promptly():
    t0 = time.monotonic()
    r = execute_code("while True:\n    pass", timeout=1.0)
    elapsed = time.monotonic() - t0
    assert r.timed_out and not r.passed and elapsed < 2.0


def test_stdin_is_closed():
    r = execute_code("try:\n    input()\nexcept EOFError:\n    print('eof')", timeout=5)
    assert r.stdout == "eof\n"


def test_secret_env_var_is_invisible(monkeypatch):
    monkeypatch.setenv("NANOCHAT_TEST_SECRET", "hunter2")
    r = execute_code("import os; print(sorted(os.environ)); print('hunter2' in repr(os.environ))")
    assert "NANOCHAT_TEST_SECRET" not in r.stdout and r.stdout.strip().endswith("False")


def test_memory_limit():
    r = execute_code("x = bytearray(2**31)", memory_mb=256)
    assert r.memory_exceeded and not r.passed and not r.timed_out


def test_file_size_limit():
    r = execute_code("open('big', 'wb').write(b'0' * (8 * 2**20))", max_file_mb=1)
    assert not r.passed and "File too large" in r.stderr


def test_huge_output_is_capped_and_parent_stays_small():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, a high-water mark
    code = "import sys\nchunk = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(chunk)\nprint('done', file=sys.stderr)"
    r = execute_code(code, timeout=30)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert r.truncated and len(r.stdout.encode()) <= 2**20 and set(r.stdout) == {"x"}
    assert r.passed and r.stderr == "done\n"  # the full 1 GiB went through (drained) and the program finished
    assert (after - before) < 64 * 1024, f"parent grew by {(after - before) / 1024:.0f} MiB"


@pytest.fixture
def shared_dir():
    """A world-writable directory (pytest's tmp_path sits under a 0700 parent the sandbox uid cannot enter)."""
    d = tempfile.mkdtemp(prefix="nanochat_test_", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_grandchildren_die_on_timeout(shared_dir):
    d = shared_dir
    same_group, new_session = os.path.join(d, "same_group"), os.path.join(d, "new_session")
    code = f"""
import os, time
for marker, escape in (({same_group!r}, False), ({new_session!r}, True)):
    if os.fork() == 0:
        if escape:
            os.setsid()  # leave the process group: killpg alone would miss this one
        time.sleep(1.5)
        open(marker, 'w').write('still alive')
        os._exit(0)
while True:
    pass
"""
    r = execute_code(code, timeout=0.8)
    assert r.timed_out
    time.sleep(2.5)
    assert not os.path.exists(same_group), "a grandchild in the process group survived the timeout"
    if IS_ROOT:  # the uid sweep exists only when we can give the run its own uid
        assert not os.path.exists(new_session), "a setsid'ed grandchild survived the timeout"


@pytest.mark.skipif(not IS_ROOT, reason="as non-root RLIMIT_NPROC counts all of this user's processes")
def test_fork_bomb_stays_under_process_cap():
    code = """
import os, time
n = 0
for _ in range(100):  # bounded: a weak sandbox makes 100 sleeping processes, not infinitely many
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    n += 1
print(n)
"""
    r = execute_code(code, timeout=10, max_processes=8)
    assert r.passed, r.stderr
    assert int(r.stdout) < 8  # the launcher-turned-program is one of the 8
    assert subprocess.run(["true"]).returncode == 0  # the host can still spawn processes
    # and the sleeping children were killed when the program exited (zombies awaiting init's reaping are dead)
    r = subprocess.run(["ps", "-eo", "uid=,stat="], capture_output=True, text=True)
    alive = [line for line in r.stdout.splitlines() if int(line.split()[0]) >= 1_900_000_000 and "Z" not in line.split()[1]]
    assert alive == []


# -----------------------------------------------------------------------------
# strict mode (bubblewrap)

STRICT_OK, STRICT_WHY = strict_available()
needs_strict = pytest.mark.skipif(not STRICT_OK, reason=f"strict mode unavailable: {STRICT_WHY}")


@needs_strict
def test_strict_mode_protects_files_outside_workdir(shared_dir):
    # shared_dir is not under /tmp: strict mode gives the program a private empty /tmp, which would hide it
    sentinel = os.path.join(shared_dir, "sentinel")
    code = f"import os\nos.remove({sentinel!r})\nprint('removed')"
    open(sentinel, "w").close()
    os.chmod(sentinel, 0o666)
    r = execute_code(code, strict=True)
    assert not r.passed and os.path.exists(sentinel) and "Read-only file system" in r.stderr
    # the same program without strict mode does remove it: the test can tell the modes apart
    r = execute_code(code, strict=False)
    assert r.passed and not os.path.exists(sentinel)


@needs_strict
def test_strict_mode_has_no_network_but_a_writable_workdir():
    code = """
import socket
open('scratch.txt', 'w').write('ok')
print(open('scratch.txt').read())
s = socket.socket()
s.settimeout(2)
try:
    s.connect(('1.1.1.1', 53))
    print('connected')
except OSError as e:
    print('no network', e.errno)
"""
    r = execute_code(code, strict=True)
    assert r.passed and r.stdout.startswith("ok\nno network"), r.stdout + r.stderr


def test_strict_without_bubblewrap_is_a_clear_error(monkeypatch):
    import nanochat.execution as ex
    monkeypatch.setattr(ex.shutil, "which", lambda name, **kw: None)
    ex.strict_available.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="apt-get install bubblewrap"):
            execute_code("print(1)", strict=True)
    finally:
        monkeypatch.undo()
        ex.strict_available.cache_clear()
