"""``ssad info``: what a preset or config file sets, and the size of its model."""

from __future__ import annotations

import json

import click

from ssad.cli._common import command


@command("info")
@click.option("--preset", default="texture", show_default=True, help="Named preset.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Config JSON.")
@click.option("--size", default=512, show_default=True, help="Image side for the FLOP count.")
def info(preset: str, config_file: str | None, size: int) -> None:
    """Print the effective config and the model's weights and FLOPs per image."""
    from ssad.config import Config
    from ssad.model import build_autoencoder, count_flops

    cfg = Config.load(config_file) if config_file else Config.preset(preset)
    model = build_autoencoder(cfg.model)
    click.echo(json.dumps(cfg.to_dict(), indent=2))
    click.echo(
        f"weights: {model.count_params():,}   "
        f"GFLOP per {size}x{size} image: {count_flops(model, size, size) / 1e9:.1f}"
    )
