"""``ssad predict``: heatmap overlays, masks and scores for any images."""

from __future__ import annotations

import click

from ssad.cli._common import command, parse_settings, score_set_option


@command("predict", reads_images=True)
@click.argument("run_dir", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder for overlays, masks, scores.csv and scores.json.",
)
@score_set_option
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--threshold", type=float, help="Pixel and image threshold instead of the stored calibration."
)
def predict(run_dir, inputs, out_dir, settings, batch_size, threshold, on_bad):
    """Find defects in INPUT... (image files, folders or glob patterns) with RUN_DIR's model
    (or an ONNX or OpenVINO export of it).

    Writes <name>_overlay.png and <name>_mask.png per image (at its own size) and
    scores.csv / scores.json (path, score, is_anomalous).
    """
    from ssad.prediction import predict_files

    rows, skipped = predict_files(
        run_dir,
        inputs,
        out_dir,
        batch_size=batch_size,
        threshold=threshold,
        on_bad=on_bad,
        score_overrides=parse_settings(settings),
        progress=True,
    )
    found = sum(r["is_anomalous"] for r in rows)
    click.echo(f"{found} of {len(rows)} images anomalous; results in {out_dir}")
    return skipped
