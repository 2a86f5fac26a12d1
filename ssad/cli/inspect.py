"""``ssad inspect``: is a data set texture-like (stationary) or object-like? (paper Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import click

from ssad.cli._common import command


@command("inspect", reads_images=True)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--resolution", default=256, show_default=True, help="Working resolution (px).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="PNG for the mean and std maps  [default: ./<DATA_DIR name>_stationarity.png]",
)
def inspect(data_dir: str, resolution: int, out: str | None, on_bad: str):
    """Check whether every pixel position of the training images has the same distribution.

    Prints the images' sizes and aspects with the working geometry training will pick, a
    stationarity score (1 = the same everywhere, as for textures), a verdict with the preset
    to train with, and saves the per-position mean and std maps.
    """
    from ssad.inspection import data_stationarity, plot_stationarity, size_summary

    name = Path(data_dir).resolve().name
    result, skipped = data_stationarity(data_dir, resolution, on_bad)
    out_path = plot_stationarity(result, out or f"{name}_stationarity.png", title=name)
    click.echo(
        f"{result.n_images} training images at {result.resolution} px, "
        f"windows of {result.mean.shape[0]} px"
    )
    click.echo(size_summary(data_dir, resolution))
    click.echo(f"stationarity score: {result.score:.2f} (1 = same statistics at every position)")
    click.echo(f"verdict: {result.verdict}")
    click.echo(f"maps: {out_path}")
    return skipped
