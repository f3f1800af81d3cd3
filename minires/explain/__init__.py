"""The lesson of ``minires explain``: how a weight used twice gets its gradient.

All of it runs on the library's own shared residual block (:mod:`minires.explain.lesson`):

* :mod:`~minires.explain.gradients`: the table of each use's gradient, their sum, the engine's
  and the numerical gradient;
* :mod:`~minires.explain.trace`: the engine's backward walk, accumulation by accumulation;
* :mod:`~minires.explain.graph`: the block's graph as DOT text or a PNG;
* :mod:`~minires.explain.steps`: optimizer steps of the shared weight and its momentum buffer;
* :mod:`~minires.explain.bugs`: the three classic bugs, each in a deliberately wrong teaching
  variant beside the right result.

Every report has a ``text()`` method returning its lines; the command line prints them.
"""
from minires.explain.bugs import BUGS, BugReport, show_bug
from minires.explain.gradients import SharedGradientReport, explain_shared_gradient
from minires.explain.graph import block_graph, to_dot, write_dot, write_png
from minires.explain.lesson import Lesson, make_lesson, untied_copy
from minires.explain.steps import StepsReport, explain_steps
from minires.explain.trace import TraceReport, trace_backward

__all__ = ["BUGS", "BugReport", "Lesson", "SharedGradientReport", "StepsReport", "TraceReport",
           "block_graph", "explain_shared_gradient", "explain_steps", "make_lesson", "show_bug",
           "to_dot", "trace_backward", "untied_copy", "write_dot", "write_png"]
