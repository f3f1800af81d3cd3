"""``minires compare`` and ``minires plot`` of a sweep, checked against the runs' own files.

The runs are real (``minires train``: ResNet-8 on the embedded dataset, 3 epochs): unshared with
seeds 0, 1, 2 and shared with seeds 0, 1, so that seed 2 has no pair, plus a shared seed-2 run
cut back to its first epoch, as a run killed after epoch 1 leaves its metrics. Every expected
number is computed here from ``metrics.csv`` and ``config.json`` with NumPy.
"""
import csv
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from minires.cli.main import cli
from minires.compare import curves, group_runs
from minires.runs import find_runs

pytestmark = pytest.mark.usefixtures("embedded_generated_once")

TINY = ["--depth", "8", "--subset", "128", "--test-subset", "64", "-b", "32", "--lr", "0.05",
        "--device", "cpu", "--no-progress", "--epochs", "3"]
SEEDS = {"none": (0, 1, 2), "block": (0, 1)}


def name(share, seed):
    return f"embedded-resnet8-{share}-seed{seed}"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare") / "runs"
    for share, seeds in SEEDS.items():
        for seed in seeds:
            result = CliRunner().invoke(cli, ["train", *TINY, "--share", share, "--seed",
                                              str(seed), "-o", str(folder / name(share, seed))])
            assert result.exit_code == 0, result.output
    killed = folder / name("block", 2)
    result = CliRunner().invoke(cli, ["train", *TINY, "--share", "block", "--seed", "2",
                                      "-o", str(killed)])
    assert result.exit_code == 0, result.output
    for metrics in ("metrics.jsonl", "metrics.csv"):
        lines = (killed / metrics).read_text().splitlines(keepends=True)
        keep = 1 if metrics == "metrics.jsonl" else 2  # the csv has a header
        (killed / metrics).write_text("".join(lines[:keep]))
    return folder


def metrics(folder, share, seed):
    """Columns of a run's metrics.csv as float arrays."""
    with open(folder / name(share, seed) / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    return {key: np.array([float(row[key]) for row in table]) for key in table[0]}


def expected(folder):
    """Per share: each statistic's values over seeds; and the shared − unshared differences."""
    stats = {}
    for share, seeds in SEEDS.items():
        runs = [metrics(folder, share, seed) for seed in seeds]
        stats[share] = {
            "final_test_error": np.array([m["test_error"][-1] for m in runs]),
            "best_test_error": np.array([m["test_error"].min() for m in runs]),
            "final_train_error": np.array([m["train_error"][-1] for m in runs]),
            "final_train_loss": np.array([m["train_loss"][-1] for m in runs]),
            "seconds": np.array([m["seconds"].sum() for m in runs]),
        }
    paired = {key: stats["block"][key] - stats["none"][key][:2]  # seeds 0 and 1 in both
              for key in ("final_test_error", "best_test_error", "final_train_error")}
    return stats, paired


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def test_csv_numbers_match_the_metrics_files(sweep_dir):
    result = invoke(sweep_dir, "--format", "csv")
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(row["model"], row["share"]) for row in table] == [("resnet8", "none"),
                                                                ("resnet8", "block")]
    stats, paired = expected(sweep_dir)
    for row in table:
        share = row["share"]
        config = json.loads((sweep_dir / name(share, 0) / "config.json").read_text())
        assert int(row["parameters"]) == config["num_parameters"]
        assert int(row["runs"]) == len(SEEDS[share])
        assert row["seeds"] == " ".join(map(str, SEEDS[share]))
        assert int(row["incomplete"]) == (1 if share == "block" else 0)
        assert row["epochs"] == "3" and row["dataset"] == "embedded"
        for key, values in stats[share].items():
            assert float(row[f"{key}_mean"]) == pytest.approx(values.mean(), rel=1e-12)
            assert float(row[f"{key}_std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
    unshared, shared = table
    assert unshared["pairs"] == "" and unshared["diff_final_test_error_mean"] == ""
    assert shared["pairs"] == "2" and shared["paired_seeds"] == "0 1"
    for key, differences in paired.items():
        assert float(shared[f"diff_{key}_mean"]) == pytest.approx(differences.mean(), rel=1e-12)
        assert float(shared[f"diff_{key}_std"]) == pytest.approx(differences.std(ddof=1),
                                                                 rel=1e-12)
    per_seed = dict(item.split(":") for item in shared["diff_final_test_error_per_seed"].split())
    assert {int(seed): float(d) for seed, d in per_seed.items()} == pytest.approx(
        dict(enumerate(paired["final_test_error"])), rel=1e-12)
    # The run cut back to epoch 1 is in no statistic, and said so on stderr.
    assert f"{sweep_dir / name('block', 2)} (epoch 1 of 3)" in result.stderr


def test_markdown_shows_mean_std_pairs_and_the_incomplete_run(sweep_dir):
    result = invoke(sweep_dir)
    assert result.exit_code == 0, result.output
    stats, paired = expected(sweep_dir)
    text = result.output
    for share, runs in (("none", "3"), ("block", "2 (+1 incomplete)")):
        values = stats[share]
        cells = [f"{100 * v.mean():.2f} ± {100 * v.std(ddof=1):.2f}" for v in
                 (values["final_test_error"], values["best_test_error"],
                  values["final_train_error"])]
        loss = values["final_train_loss"]
        cells.append(f"{loss.mean():.4f} ± {loss.std(ddof=1):.4f}")
        row = next(line for line in text.splitlines() if line.startswith(f"| resnet8 | {share} "))
        assert f"| {runs} | {' | '.join(cells)} |" in row
    pair_row = next(line for line in text.splitlines()
                    if line.startswith("| resnet8 | block ") and "| 2 |" in line)
    d = paired["final_test_error"]
    assert f"{100 * d.mean():+.2f} ± {100 * d.std(ddof=1):.2f}" in pair_row
    assert f"seed 0: {100 * d[0]:+.2f}, seed 1: {100 * d[1]:+.2f}" in pair_row
    assert f"`{sweep_dir / name('block', 2)}` (epoch 1 of 3)" in text
    assert "sample standard deviation (n − 1)" in text
    assert ("All runs: shortcut A, lr 0.05, batch 32, the first 128 training images, the first "
            "64 test images.") in text


def test_run_folders_give_the_same_table_as_their_folder(sweep_dir, tmp_path):
    whole = invoke(sweep_dir, "--format", "csv").stdout
    runs = [sweep_dir / name(share, seed) for share in ("none", "block") for seed in (0, 1, 2)]
    assert invoke(*runs, "--format", "csv").stdout == whole
    # A folder given twice, and a run given again inside it, count once.
    assert invoke(sweep_dir, runs[0], sweep_dir, "--format", "csv").stdout == whole
    out = tmp_path / "table.csv"
    result = invoke(sweep_dir, "--format", "csv", "-o", out)
    assert result.exit_code == 0 and result.stdout == f"wrote {out}\n"
    assert out.read_text() == whole and os.listdir(tmp_path) == ["table.csv"]


def test_bad_folders_give_one_line(sweep_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(empty)
    assert result.exit_code == 1
    assert result.output == (f"Error: {empty} is neither a run folder (config.json, "
                             f"metrics.jsonl, metrics.csv, last.h5, best.h5) nor a sweep folder "
                             f"(sweep.json or run folders inside)\n")
    result = invoke(tmp_path / "missing")
    assert result.exit_code == 2 and "does not exist" in result.output
    only_incomplete = invoke(sweep_dir / name("block", 2))
    assert only_incomplete.exit_code == 1
    assert only_incomplete.output.startswith("Error: no complete run to compare: ")
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir / name("none", 0), copy)
    twice = invoke(sweep_dir, copy)
    assert twice.exit_code == 1 and twice.output.count("\n") == 1
    assert "are both seed 0 of resnet8 share=none" in twice.output
    (copy / "metrics.jsonl").write_text('{"epoch": 1,\n')
    broken = invoke(copy)
    assert broken.exit_code == 1
    assert broken.output == f"Error: {copy / 'metrics.jsonl'} line 1 is not valid JSON\n"


def test_sweep_curves_are_means_with_min_max_bands(sweep_dir):
    groups = group_runs(find_runs([sweep_dir]))
    shared = next(group for group in groups if group.share == "block")
    epochs, mean, low, high, count = curves(shared, "test_error")
    # The run cut back to epoch 1 counts, so the curve stops where it stops.
    assert count == 3 and epochs == [1]
    unshared = next(group for group in groups if group.share == "none")
    epochs, mean, low, high, count = curves(unshared, "train_error")
    columns = np.stack([metrics(sweep_dir, "none", seed)["train_error"] for seed in (0, 1, 2)])
    assert count == 3 and epochs == [1, 2, 3]
    np.testing.assert_allclose(mean, columns.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(low, columns.min(axis=0))
    np.testing.assert_allclose(high, columns.max(axis=0))


def test_plot_of_a_sweep_writes_a_png(sweep_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    out = tmp_path / "sweep.png"
    result = CliRunner().invoke(cli, ["plot", str(sweep_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_without_matplotlib_says_so_in_one_line(sweep_dir, tmp_path, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    result = CliRunner().invoke(cli, ["plot", str(sweep_dir), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.output == ("Error: plotting needs matplotlib, which is not installed: "
                             "pip install 'minires[plot]'\n")
