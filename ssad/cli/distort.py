"""``ssad distort``: look at the training corruption before training."""

from __future__ import annotations

from pathlib import Path

import click

from ssad.cli._common import command


@command("distort", reads_images=True)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder.")
@click.option("-n", "count", default=16, show_default=True, help="Number of images.")
@click.option("--preset", default="texture", show_default=True, help="Named preset.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Config JSON.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
def distort(
    data_dir: str,
    out_dir: str,
    count: int,
    preset: str,
    config_file: str | None,
    seed: int,
    on_bad: str,
):
    """Write a PNG grid of original | distorted | mask rows for DATA_DIR's training images."""
    import numpy as np

    from ssad.config import Config
    from ssad.data.distort import preview
    from ssad.data.readers import load_images, training_image_paths
    from ssad.images import write_png

    if count < 1:
        raise click.BadParameter("must be at least 1", param_hint="-n")
    cfg = Config.load(config_file) if config_file else Config.preset(preset)
    paths = training_image_paths(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # a bad --out fails before the images are read
    chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int)]
    if cfg.data.on_bad == "skip":
        on_bad = "skip"
    images, skipped = load_images(chosen, cfg.data.resolution, on_bad)
    target = out / "distortions.png"
    write_png(target, preview(images / 255.0, cfg.distortion, seed))
    click.echo(str(target))
    return skipped
