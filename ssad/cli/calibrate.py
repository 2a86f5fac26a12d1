"""``ssad calibrate``: store a run's pixel and image thresholds."""

from __future__ import annotations

import click

from ssad.cli._common import command


@command("calibrate", reads_images=True)
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
def calibrate(run_dir, data_dir, method, threshold, batch_size, on_bad):
    """Choose and store RUN_DIR's thresholds (RUN_DIR/calibration.json).

    DATA_DIR: an MVTec AD category (test/<defect>/, ground_truth/<defect>/) or a folder.
    Without DATA_DIR or --threshold: refit the good-image statistics and thresholds on the
    run's held-out good images, as training does.
    """
    import json

    from ssad.calibration import calibrate_f1, calibrate_on_good, good_test_images
    from ssad.detection import Detector
    from ssad.errors import SsadError
    from ssad.run import RunDir

    detector = Detector.load(run_dir, require_calibration=False)
    statistics, skipped = detector.statistics, []
    if threshold is not None:
        calibration = detector.with_threshold(threshold).calibration
    elif data_dir is None:
        run = RunDir(run_dir)
        if not run.heldout_path.is_file():
            raise SsadError(
                f"{run_dir} lists no held-out good images ({run.heldout_path.name}): give "
                "DATA_DIR or --threshold"
            )
        images = run.read_heldout()
        calibration, statistics = calibrate_on_good(detector, images, batch_size=batch_size)
    elif method == "f1":
        calibration, skipped = calibrate_f1(detector, data_dir, batch_size, on_bad, progress=True)
    else:
        images, skipped = good_test_images(data_dir, on_bad)
        calibration, statistics = calibrate_on_good(detector, images, batch_size=batch_size)
    path = RunDir(run_dir).write_calibration(calibration, statistics)
    click.echo(json.dumps(calibration.to_dict(), indent=2))
    click.echo(f"saved {path}")
    return skipped
