"""`git_commit` says a run's code differs from its commit, not that numbers were written beside it."""

import subprocess

from suite.provenance import git_commit


def test_dirty_means_the_code_changed_and_not_the_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results/bench.json").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "results/bench.json").write_text('{"ratio": 1.0}\n')  # a bench wrote its numbers
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == {"commit": head, "dirty": True}
