"""The lessons in docs/lessons run, print what they show, and fail when what they teach breaks."""
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS = sorted((Path(__file__).resolve().parents[1] / "docs" / "lessons").glob("[0-9][0-9]_*.py"))


def run(code_or_path, *, sabotage: str = ""):
    """Run a lesson in a fresh interpreter, after ``sabotage`` (Python) if given."""
    if sabotage:
        args = ["-c", f"{sabotage}\nimport runpy\nrunpy.run_path({str(code_or_path)!r}, "
                      f"run_name='__main__')"]
    else:
        args = [str(code_or_path)]
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_the_six_lessons_are_there_in_order():
    assert [p.name[:2] for p in LESSONS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_and_prints(lesson):
    result = run(lesson)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) >= 5


# The lessons check their claims: with the library broken the way each lesson is about, the
# lesson stops with an error.

IN_PLACE = """
import minires.autograd.engine as engine
def accumulate_in_place(leaf, g, private):
    if leaf.grad is None:
        leaf.grad = g
    else:
        leaf.grad += g
engine.accumulate_leaf = accumulate_in_place
"""

NO_DEDUP = """
from minires.nn.module import Module
Module.named_parameters = lambda self: iter(list(self._all_named("_parameters")))
"""

ONE_BATCHNORM = """
import minires.functions as F
from minires.models.resnet import BasicBlock
def forward_with_bn1_twice(self, x):
    h = self.bn1(self.conv1(x), relu=True)
    return F.relu(self.bn1(self.conv2(h)) + x)
BasicBlock.forward = forward_with_bn1_twice
"""

SUM_ONE_USE = """
import minires.autograd.engine as engine
def keep_the_last(leaf, g, private):
    leaf.grad = g.copy()
engine.accumulate_leaf = keep_the_last
"""


@pytest.mark.parametrize("name, sabotage", [
    ("01_a_weight_used_twice.py", SUM_ONE_USE),
    ("02_accumulation_without_aliasing.py", IN_PLACE),
    ("03_collecting_parameters_once.py", NO_DEDUP),
    ("04_one_batchnorm_per_use.py", ONE_BATCHNORM),
    ("05_the_shared_resnet.py", NO_DEDUP),
])
def test_a_lesson_fails_when_the_library_breaks_its_claim(name, sabotage):
    result = run(LESSONS[0].parent / name, sabotage=sabotage)
    assert result.returncode != 0, result.stdout
    assert result.stderr.rstrip().endswith("AssertionError"), result.stderr
