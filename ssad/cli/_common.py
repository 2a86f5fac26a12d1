"""What every command shares: ``--debug``, one-line errors and, on commands that read images,
``--skip-bad`` with one report of what was skipped.

Command modules import nothing heavy at the top: ``ssad --help`` and argument errors answer
without importing TensorFlow, which each command imports when it runs."""

from __future__ import annotations

import functools
import os
import sys
import warnings

import click

from ssad import import_tensorflow_quietly
from ssad.errors import SsadError

COMMANDS: list[click.Command] = []


def command(name: str | None = None, reads_images: bool = False, **kwargs):
    """Register a ``ssad`` sub-command with ``--debug`` (and ``--skip-bad`` when it
    ``reads_images``: the function then gets ``on_bad`` = ``"skip"`` or ``"error"`` and
    returns the skipped files, ``BadImageError``s, which are listed here as
    ``skipped PATH: PROBLEM`` lines on stderr).

    Without ``--debug``, errors print as one line on stderr with exit status 1: ``SsadError``
    and ``OSError`` as they are, any other exception with a hint to rerun with ``--debug``
    for the traceback. Ctrl-C prints ``interrupted`` and exits with status 130. Warnings
    print as one ``warning:`` line each.
    """

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, debug: bool, skip_bad: bool = False, **kw):
            if reads_images:
                kw["on_bad"] = "skip" if skip_bad else "error"
            try:
                with warnings.catch_warnings():
                    if not debug:
                        warnings.showwarning = _show_warning
                    import_tensorflow_quietly()
                    skipped = fn(*args, **kw)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except (SsadError, OSError) as e:
                if debug:
                    raise
                _fail(_one_line(e))
            except KeyboardInterrupt:
                click.echo("interrupted", err=True)
                sys.exit(130)
            except Exception as e:
                if debug:
                    raise
                _fail(f"{type(e).__name__}: {_one_line(e)} (rerun with --debug for the traceback)")
            for bad in skipped or []:
                click.echo(f"skipped {bad.path}: {bad.problem}", err=True)

        wrapper = click.option("--debug", is_flag=True, help="Show full tracebacks.")(wrapper)
        if reads_images:
            wrapper = click.option(
                "--skip-bad", is_flag=True, help="Skip unreadable images and list them."
            )(wrapper)
        cmd = click.command(name, **kwargs)(wrapper)
        COMMANDS.append(cmd)
        return cmd

    return decorator


def _fail(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {_one_line(message)}", err=True)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        if isinstance(e, FileExistsError) and not os.path.isdir(e.filename):
            return f"{e.filename}: is a file, not a folder"  # mkdir through a file
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split()) or type(e).__name__


def score_set_option(fn):
    """``--set score.KEY=VALUE`` (repeatable): rescore a trained run without retraining."""
    return click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="score.KEY=VALUE",
        help="Change a scoring option of the run, e.g. --set score.image=mean_max (repeatable); "
        "statistics and thresholds are recomputed from its held-out good images.",
    )(fn)


def parse_settings(settings) -> dict:
    """``{"score.image": "mean_max", ...}`` from ``KEY=VALUE`` texts (values read as JSON,
    else as text)."""
    import json

    parsed = {}
    for text in settings:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--set")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed
