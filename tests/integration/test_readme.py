"""The README's "Using it" commands, run in order in a fresh folder the way a newcomer runs them (with a hundredth
of their steps), give what the README says they give: the runs and checkpoints it names, an extension that
continues the run, a test of the checkpoint on the data it was trained on (random_arm_acc = 1/degree), and the
listings. `.ci/run` runs the README's two main commands the same way, verbatim."""

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from suite.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
FEWER = 100  # a hundredth of each fit's steps; a fit without max_steps (the config's 2,000) gets 20
# 200 batches an epoch: the shipped config validates every 200 steps, which Lightning refuses past an epoch
SMALL = ["--data.options.num_train=12800", "--data.options.num_val=64", "--data.options.num_test=64",
         "--trainer.enable_progress_bar=false"]


def readme_commands(marker: str) -> list[list[str]]:
    """The commands of the fenced bash block after `<!-- ci:MARKER -->`, continuation lines joined, comments cut."""
    block = README.read_text().split(f"<!-- ci:{marker} -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def fewer_steps(argv: list[str]) -> list[str]:
    if argv[0] != "fit":
        return argv
    steps = [re.fullmatch(r"--trainer\.max_steps=(\d+)", arg) for arg in argv]
    shortened = [f"--trainer.max_steps={int(m.group(1)) // FEWER}" if m else arg for arg, m in zip(argv, steps)]
    return [*shortened, *SMALL, *([] if any(steps) else ["--trainer.max_steps=20"])]


def val_logged(root: Path, key: str) -> list[float]:
    values = []
    for metrics in sorted(root.glob("lightning_logs/version_*/metrics.csv")):
        values += [float(row[key]) for row in csv.DictReader(metrics.open()) if row.get(key)]
    return values


def test_the_using_it_commands_run_in_order_and_give_what_the_readme_says(tmp_path, monkeypatch, capsys):
    commands = readme_commands("using")
    assert [argv[:2] for argv in commands] == [
        ["foresight", "fit"], ["foresight", "fit"], ["foresight", "test"], ["foresight", "fit"],
        ["foresight", "fit"], ["foresight", "tasks"], ["foresight", "objectives"], ["foresight", "sizes"]]
    monkeypatch.chdir(tmp_path)
    outputs = []
    for argv in commands:
        capsys.readouterr()
        main(fewer_steps(argv[1:]))
        outputs.append(capsys.readouterr().out)

    star = tmp_path / "runs/star_graph/checkpoints/last.ckpt"
    assert torch.load(star, weights_only=False)["global_step"] == 3000 // FEWER  # extended from 20 to 30
    tested = outputs[2]
    assert re.search(r"test/star_graph/random_arm_acc\W+0\.5\W", tested), tested  # degree 2: 1/degree
    mtp = torch.load(tmp_path / "runs/parallel_mtp/checkpoints/last.ckpt", weights_only=False)
    assert mtp["hyper_parameters"]["objective"]["class_path"].endswith("ParallelMTP")
    assert mtp["hyper_parameters"]["objective"]["init_args"]["n"] == 4
    micro = tmp_path / "runs/micro_degree3"
    assert torch.load(micro / "checkpoints/last.ckpt", weights_only=False)["hyper_parameters"]["size"]["name"] == \
        "micro"
    # a step budget without a schedule of its own validates ten times, every max_steps / 10 steps
    assert val_logged(micro, "val/star_graph/random_arm_acc") == pytest.approx([1 / 3] * 10)
    assert outputs[5].startswith("star_graph (StarGraph): ") and "--data.options.degree=2" in outputs[5]
    assert outputs[6].startswith("parallel_mtp (ParallelMTP): ") and "--model.objective.n=2" in outputs[6]
    assert " 1b " in outputs[7] and "32000" in outputs[7].replace(",", "")


def test_the_corpus_commands_prepare_sweep_and_report_as_the_readme_says(tmp_path, monkeypatch):
    """The prepare command verbatim (bash: it expands the stdlib's folder); the shipped sweep with one seed, the
    reference and the positive control, for 4 steps; the report command verbatim."""
    import subprocess
    import sys

    import yaml

    from suite.grid import SHIPPED
    from suite.results import read_rows

    block = README.read_text().split("<!-- ci:corpus -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        ["foresight", "prepare"], ["foresight", "sweep"], ["foresight", "report"]]
    bin_folder = Path(sys.executable).parent
    prepared = subprocess.run(["bash", "-c", "\n".join(lines[:2])], cwd=tmp_path, capture_output=True, text=True,
                              env={**__import__("os").environ, "PATH": f"{bin_folder}:/usr/bin:/bin"})
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    manifest = json.loads((tmp_path / "data/stdlib/foresight.json").read_text())
    assert len(manifest["sources"]) == 141 and all(split["documents"] for split in manifest["splits"].values())

    sweep = yaml.safe_load((SHIPPED / "stdlib_corpus.yaml").read_text())
    assert shlex.split(lines[2], comments=True) == ["foresight", "sweep", "--config", sweep["name"]]
    sweep.update(seeds=[0], budget={"steps": 2}, objectives=[sweep["objectives"][0], sweep["objectives"][-1]])
    (tmp_path / "stdlib_corpus.yaml").write_text(yaml.safe_dump(sweep))
    monkeypatch.chdir(tmp_path)
    main(["sweep", "--config", "stdlib_corpus.yaml"])
    main(shlex.split(lines[3], comments=True)[1:])
    # points run side by side, so rows land in the order they finish
    rows = sorted(read_rows(tmp_path / "results/stdlib_corpus/runs.jsonl"), key=lambda row: row["axes"]["label"])
    assert [row["axes"]["label"] for row in rows] == ["ntp", "ntp_seen_test"]
    assert all(row["scores"]["corpus"]["bits_per_byte"] > 0 for row in rows)
    assert len(rows[0]["items"]["corpus"]) == manifest["splits"]["test"]["documents"]
    report = (tmp_path / "results/stdlib_corpus/report.md").read_text()
    assert "## Verdict" in report and "`ntp_seen_test`" in report

    # "Start from a pretrained model", on the corpus just prepared: fit, export, retrofit heads, export again
    commands = readme_commands("retrofit")
    assert [argv[:2] for argv in commands] == [["foresight", "fit"], ["foresight", "export"]] * 2 + [
        ["foresight", "fit"]]
    for argv in commands:
        main([re.sub(r"^--trainer\.max_steps=\d+$", "--trainer.max_steps=2", arg) for arg in argv[1:]] +
             (["--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1"] if argv[1] == "fit" else []))
    base = torch.load(tmp_path / "runs/stdlib_ntp/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    retrofit = torch.load(tmp_path / "runs/stdlib_retrofit/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(retrofit[name], tensor) for name, tensor in base.items())  # the frozen trunk
    assert (tmp_path / "runs/stdlib_retrofit_llama/foresight_heads.safetensors").is_file()
    distilled = torch.load(tmp_path / "runs/stdlib_distilled/checkpoints/last.ckpt", weights_only=False)
    assert distilled["hyper_parameters"]["objective"]["class_path"].endswith("SelfDistillMTP")
