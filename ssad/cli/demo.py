"""``ssad demo``: demo data, a few minutes of training and the evaluation report, in one go."""

from __future__ import annotations

import click

from ssad.cli._common import command


@command("demo")
@click.option("--out", default="ssad_demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo data, the run and the report.")  # fmt: skip
@click.option("--texture", type=click.Choice(["brick", "grass", "gravel"]), default="brick",
              show_default=True, help="Which scikit-image texture photograph to use.")  # fmt: skip
@click.option("--minutes", default=5.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Time budget of the whole demo; training gets most of it.")  # fmt: skip
@click.option("--preset", default="demo", show_default=True, help="Preset to train.")
@click.option("--seed", default=0, show_default=True, help="Seed of the data and the training.")
def demo(out: str, texture: str, minutes: float, preset: str, seed: int) -> None:
    """Train on defect-free crops of a real texture photo and find drawn defects.

    Makes the demo data (or reuses it), trains the preset for at most --minutes, evaluates it
    and prints the metrics and where the HTML report is.
    """
    from ssad.demo import run_demo
    from ssad.report import format_table

    result = run_demo(out, texture, minutes, preset, seed)
    click.echo(format_table(result.metrics))
    click.echo(result.summary())
