"""``ssad make-demo-data``: a small MVTec-layout data set with drawn defects on real textures."""

from __future__ import annotations

import click

from ssad.cli._common import command


@command("make-demo-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--texture",
    type=click.Choice(["brick", "grass", "gravel"]),
    default="brick",
    show_default=True,
    help="Which scikit-image texture photograph to cut.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option(
    "--shapes",
    type=click.Choice(["square", "varied"]),
    default="square",
    show_default=True,
    help="square: 128-px crops; varied: crops of random size and aspect at one pixel scale.",
)
def make_demo_data(out: str, texture: str, seed: int, shapes: str) -> None:
    """Write crops of a texture photo to OUT: train/good, test/good, test/<defect>, masks."""
    from ssad.demo_data import make_demo_data as make

    path = make(out, texture=texture, seed=seed, shapes=shapes)
    counts = {p.name: sum(1 for _ in p.iterdir()) for p in sorted((path / "test").iterdir())}
    n_train = sum(1 for _ in (path / "train" / "good").iterdir())
    tests = ", ".join(f"{name} {n}" for name, n in counts.items())
    click.echo(f"wrote {path}: train/good {n_train}; test: {tests}")
