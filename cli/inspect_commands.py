"""Commands that look inside the engine: ``minires gradcheck`` and ``minires explain``."""
from __future__ import annotations

from pathlib import Path

import click

from minires import gradcheck
from minires.backend import DEVICES, resolve_device, xp_for
from minires.cli.errors import reports_errors
from minires.explain import (BUGS, explain_shared_gradient, explain_steps, make_lesson, show_bug,
                             trace_backward, write_dot, write_png)


@click.command("gradcheck")
@click.option("--device", type=click.Choice(DEVICES), default="auto")
@reports_errors
def gradcheck_command(device):
    """Check the engine's gradients against central differences (float64, random gy).

    Prints one row per function; exits with status 1 if any check fails.
    """
    device = resolve_device(device)
    rows = []
    for case in gradcheck.standard_cases(xp_for(device)):
        result = gradcheck.gradcheck(case.f, case.inputs)
        rows.append((case.name, max(result.max_abs_error, default=0.0),
                     max(result.max_rel_error, default=0.0), result.ok))
    width = max([len("function")] + [len(r[0]) for r in rows])
    click.echo(f"gradient checks on {device}, float64")
    click.echo(f"{'function':<{width}}  {'max abs error':>13}  {'max rel error':>13}  ok")
    for name, abs_error, rel_error, ok in rows:
        click.echo(f"{name:<{width}}  {abs_error:13.3e}  {rel_error:13.3e}  "
                   f"{'yes' if ok else 'NO'}")
    failed = [r[0] for r in rows if not r[3]]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} gradient checks failed: "
                                   + ", ".join(failed))
    click.echo(f"all {len(rows)} gradient checks passed")


def _output_file(ctx, param, value):
    """A file to write: its folder must exist and the path must not be a folder."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise click.BadParameter(f"{value} is a directory; give a file name")
    if not path.parent.is_dir():
        raise click.BadParameter(f"the folder {str(path.parent)!r} does not exist")
    return path


@click.command()
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seeds the block's weights, the input and the upstream gradient.")
@click.option("--channels", type=click.IntRange(min=1, max=8), default=2,
              help="Channels C of the block (W is C x C x 3 x 3).")
@click.option("--size", type=click.IntRange(min=2, max=16), default=4, help="Input height/width.")
@click.option("--entries", type=click.IntRange(min=1, max=12), default=6,
              help="Weight entries to show side by side.")
@click.option("--trace", is_flag=True,
              help="Show the engine's backward walk and each accumulation into W.grad.")
@click.option("--steps", is_flag=True,
              help="Show SGD steps of the shared weight and its momentum buffer.")
@click.option("--break", "bug", type=click.Choice(BUGS),
              help="Rerun the lesson with one classic weight-sharing bug switched on.")
@click.option("--dot", type=click.Path(dir_okay=False), callback=_output_file,
              help="Write the block's graph as Graphviz DOT text to this file.")
@click.option("--png", type=click.Path(dir_okay=False), callback=_output_file,
              help="Draw the block's graph into this PNG file (needs matplotlib).")
@reports_errors
def explain(seed, channels, size, entries, trace, steps, bug, dot, png):
    """Show how a weight used twice gets its gradient, on the library's own shared block.

    One 3x3 weight W is applied by both convolutions of a small residual block (each use with
    its own BatchNorm). The table shows what each use contributes, their sum, the engine's
    W.grad and the numerical gradient; the options show the engine's walk, the optimizer's
    step, the graph, and what each classic bug does.
    """
    lesson = make_lesson(channels=channels, size=size, seed=seed)
    reports = [explain_shared_gradient(lesson, entries)]
    if trace:
        reports.append(trace_backward(lesson, min(entries, 6)))  # side by side: 6 fit a line
    if steps:
        reports.append(explain_steps(lesson, entries=min(entries, 4)))
    if bug is not None:
        reports.append(show_bug(bug, lesson, entries=min(entries, 4)))
    written = []
    for path, write, what in ((dot, write_dot, "DOT text"), (png, write_png, "PNG")):
        if path is not None:  # first, so that a file that cannot be written stops everything
            write(lesson, path)
            written.append(f"Wrote the graph of the block ({what}) to {path}")
    for report in reports:
        for line in report.text():
            click.echo(line)
    if written:
        click.echo("")
    for line in written:
        click.echo(line)


COMMANDS = [gradcheck_command, explain]
