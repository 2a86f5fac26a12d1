"""``ssad train``: train on a folder of defect-free images and write a run directory."""

from __future__ import annotations

import click

from ssad.cli._common import command


@command("train", reads_images=True)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory."
)
@click.option(
    "--preset",
    default="auto",
    show_default=True,
    help="Named preset (texture, object, paper, demo, tiny); auto: texture or object by "
    "the training images' stationarity, as ssad inspect.",
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Config JSON.")
@click.option("--objective", type=click.IntRange(0, 2), help="1, 2: eq. (1), (2); 0: plain AE.")
@click.option(
    "--lam",
    type=click.FloatRange(0, 1),
    help="Weight lambda of the objective (default: 0.9 for objective 1, 0.5 for 2).",
)
@click.option("--image-size", type=int, help="Working resolution (stage crops scale with it).")
@click.option(
    "--resize",
    type=click.Choice(["auto", "square", "scale", "native"]),
    help="Working geometry: auto (default) squares same-sized images, else keeps the aspect "
    "at one scale (median shorter side -> --image-size).",
)
@click.option("--steps", type=click.IntRange(min=1), help="Total optimisation steps.")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Wall-clock budget; given alone, it replaces the step budget.",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size of every stage.")
@click.option(
    "--mixed-precision",
    type=click.Choice(["auto", "none", "bf16", "fp16"]),
    help="auto (default): bf16 where the CPU or GPU has it, else float32.",
)
@click.option(
    "--strategy",
    type=click.Choice(["default", "mirrored", "multiworker"]),
    help="mirrored: all local GPUs; multiworker: the cluster in TF_CONFIG.",
)
@click.option("--seed", type=int, help="Random seed; also makes the run deterministic.")
def train(
    data_dir: str,
    run_dir: str,
    preset: str,
    config_file: str | None,
    on_bad: str,
    seed: int | None,
    **options,
):
    """Train on the defect-free images in DATA_DIR (an MVTec AD category or a folder).

    Options override the preset or config file; the effective config is saved in the run
    directory. Run the same command again to resume a run that was stopped, or with a larger
    --max-minutes to train a finished run longer.
    """
    from ssad.config import Config
    from ssad.training import train as run_training
    from ssad.training import training_config

    if preset == "auto" and not config_file:
        from ssad.inspection import auto_preset

        preset, why = auto_preset(data_dir, on_bad)
        click.echo(why)
    base = Config.load(config_file) if config_file else Config.preset(preset)
    if on_bad == "skip":
        base = base.override({"data.on_bad": "skip"})
    cfg = training_config(base, seed=seed, **options)
    result = run_training(cfg, data_dir, run_dir, deterministic=seed is not None)
    click.echo(result.summary())
    return result.skipped
