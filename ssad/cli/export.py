"""``ssad export``: write a run's detector as a versioned SavedModel, ONNX or OpenVINO model."""

from __future__ import annotations

import click

from ssad.cli._common import command


@command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("export_base", type=click.Path(file_okay=False))
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    help="Version folder number; default: one more than the highest in EXPORT_BASE.",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["saved_model", "onnx", "openvino"]),
    default="saved_model",
    show_default=True,
    help="saved_model: TF Serving; onnx: ONNX Runtime (pip install 'ssad[onnx]'); "
    "openvino: OpenVINO IR (pip install 'ssad[openvino]').",
)
@click.option(
    "--precision",
    type=click.Choice(["f32", "bf16"]),
    default="f32",
    show_default=True,
    help="openvino only: bf16 computes the autoencoder in bfloat16 (faster on CPUs with AMX "
    "or AVX512-BF16; heatmaps differ from f32 by its rounding), the rest in float32.",
)
def export(
    run_dir: str, export_base: str, version: int | None, format_: str, precision: str
) -> None:
    """Export RUN_DIR to EXPORT_BASE/N/: the whole detector (resizing, model, heatmap, score,
    thresholds) as a SavedModel (signatures serving_default and serving_bytes), an ONNX
    model or an OpenVINO model."""
    from ssad.export import export as export_run

    path = export_run(run_dir, export_base, version, format_, precision)
    click.echo(f"exported {path}")
