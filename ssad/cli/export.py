"""``ssad export``: write a run's detector as a versioned SavedModel for TF Serving."""

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
def export(run_dir: str, export_base: str, version: int | None) -> None:
    """Export RUN_DIR to EXPORT_BASE/N/ (signatures serving_default and serving_bytes)."""
    from ssad.export import export as export_run

    path = export_run(run_dir, export_base, version)
    click.echo(f"exported {path}")
