"""``ssad evaluate``: MVTec AD metrics and an HTML report for a run (or an ensemble of runs)."""

from __future__ import annotations

import click

from ssad.cli._common import command, parse_settings, score_set_option


@command("evaluate", reads_images=True)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Report folder (metrics.json, curves, gallery, index.html).",
)
@score_set_option
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--threshold", type=float, help="Pixel and image threshold instead of the stored calibration."
)
@click.option(
    "--resolution",
    type=click.IntRange(min=8),
    help="Square side for pixel metrics [default: the working resolution].",
)
@click.option(
    "--gallery",
    "gallery_size",
    default=6,
    show_default=True,
    type=click.IntRange(min=0),
    help="Pictures per gallery list.",
)
def evaluate(paths, out_dir, settings, batch_size, threshold, resolution, gallery_size, on_bad):
    """Evaluate RUN_DIR... on DATA_DIR (the last path): an MVTec AD category or a folder.

    Several run directories form an ensemble: the mean of their heatmaps, each divided by
    its run's pixel threshold (the ensemble's thresholds are then 1.0).
    """
    from ssad.errors import SsadError
    from ssad.evaluation import evaluate as run_evaluation
    from ssad.report import format_table

    if len(paths) < 2:
        raise SsadError("give at least one RUN_DIR and then DATA_DIR")
    result, skipped = run_evaluation(
        paths[:-1],
        paths[-1],
        out_dir,
        batch_size=batch_size,
        threshold=threshold,
        resolution=resolution,
        on_bad=on_bad,
        score_overrides=parse_settings(settings),
        gallery_size=gallery_size,
        progress=True,
    )
    click.echo(format_table(result))
    click.echo(
        f"{result['n_images']} images in {result['seconds']:.1f} s; report: {out_dir}/index.html"
    )
    return skipped
