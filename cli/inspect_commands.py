"""Commands that look inside the engine: ``minires gradcheck`` and ``minires explain``."""
from __future__ import annotations

import click
import numpy as np

from minires import gradcheck
from minires.backend import DEVICES, resolve_device, xp_for
from minires.cli.errors import reports_errors
from minires.explain import explain_shared_gradient


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


@click.command()
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seeds input and weight.")
@click.option("--channels", type=click.IntRange(min=1, max=8), default=2)
@click.option("--size", type=click.IntRange(min=2, max=16), default=4, help="Input height/width.")
@click.option("--entries", type=click.IntRange(min=1), default=6,
              help="Weight entries to show side by side.")
@reports_errors
def explain(seed, channels, size, entries):
    """Show where the gradient of a shared convolution weight comes from.

    One 3x3 weight W is used by both convolutions of a small residual block (each use with its
    own BatchNorm, a ReLU between). Its gradient is the sum of what each use contributes: the
    engine's W.grad equals that sum, and the numerical gradient agrees.
    """
    report = explain_shared_gradient(channels=channels, size=size, seed=seed)
    N, C, H, W = report.input_shape
    click.echo(f"A residual block on x of shape ({N}, {C}, {H}, {W}):")
    click.echo("    h = relu(bn1(conv(x, W)));  y = relu(bn2(conv(h, W)) + x)")
    click.echo(f"W {tuple(report.weight.shape)} is ONE Parameter used by both convolutions; "
               "each use has its own BatchNorm.")
    click.echo("Objective: sum(y * gy) for a random gy, float64.\n")
    header = ("W index", "use 1", "use 2", "use1+use2", "engine", "numerical")
    click.echo("  ".join(f"{h:>12}" for h in header))
    flat = {name: getattr(report, name).reshape(-1) for name in
            ("grad_use1", "grad_use2", "grad_sum", "grad_engine", "grad_numerical")}
    count = min(entries, report.weight.size)
    for k in np.linspace(0, report.weight.size - 1, count).round().astype(int):
        index = ",".join(str(i) for i in np.unravel_index(k, report.weight.shape))
        values = [flat[name][k] for name in flat]
        click.echo(f"{'[' + index + ']':>12}  " + "  ".join(f"{v:12.6f}" for v in values))
    click.echo(f"\nmax |use1 + use2 - engine|    = {report.max_diff_engine:.3e}")
    click.echo(f"max |engine - numerical|      = {report.max_diff_numerical:.3e}")
    click.echo("The engine adds the gradients of both uses into W.grad (see accumulate in\n"
               "minires/autograd/engine.py); the optimizer then steps W once.")


COMMANDS = [gradcheck_command, explain]
