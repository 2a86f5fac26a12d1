"""``ssad calibrate``: store a run's pixel and image thresholds."""

from __future__ import annotations

import click

from ssad.cli._common import command


@command("calibrate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--method",
    type=click.Choice(["f1", "good-quantile"]),
    default="f1",
    show_default=True,
    help="f1: F1-optimal on DATA_DIR's labelled images (keeps the good-image statistics); "
    "good-quantile: good-image statistics and high quantiles of its defect-free images only.",
)
@click.option(
    "--threshold", type=float, help="Store this pixel and image threshold (no DATA_DIR needed)."
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
def calibrate(run_dir, data_dir, method, threshold, batch_size, skip_bad) -> None:
    """Choose and store RUN_DIR's thresholds (RUN_DIR/calibration.json).

    DATA_DIR: an MVTec AD category (test/<defect>/, ground_truth/<defect>/) or a folder.
    """
    import json

    from ssad.detection import Detector, calibrate_f1, calibrate_on_good, save_calibration
    from ssad.errors import SsadError

    detector = Detector.load(run_dir, require_calibration=False)
    statistics = detector.statistics
    if threshold is not None:
        calibration = detector.with_threshold(threshold).calibration
    elif data_dir is None:
        raise SsadError("give DATA_DIR to calibrate on, or --threshold")
    elif method == "f1":
        skipped = [] if skip_bad else None
        calibration = calibrate_f1(detector, data_dir, batch_size, skipped, progress=True)
        for bad in skipped or []:
            click.echo(f"skipped {bad}", err=True)
    else:
        calibration, statistics = calibrate_on_good(
            detector, _good_images(data_dir, skip_bad), batch_size=batch_size
        )
    path = save_calibration(run_dir, calibration, statistics)
    click.echo(json.dumps(calibration, indent=2))
    click.echo(f"saved {path}")


def _good_images(data_dir, skip_bad):
    from ssad.data.readers import read_sample, test_samples
    from ssad.errors import BadImageError, DataError

    images = []
    for sample in test_samples(data_dir):
        if sample.defect == "good":
            try:
                images.append(read_sample(sample)[0])
            except BadImageError as e:
                if not skip_bad:
                    raise
                click.echo(f"skipped {e}", err=True)
    if not images:
        raise DataError(f"{data_dir}: no defect-free test images (test/good/) to calibrate on")
    return images
