"""What every command shares: ``--debug``, ``--skip-bad`` and one-line errors."""

from __future__ import annotations

import functools
import os
import sys
import warnings

import click

from ssad.errors import SsadError

COMMANDS: list[click.Command] = []


def command(name: str | None = None, **kwargs):
    """Register a ``ssad`` sub-command with ``--debug`` and ``--skip-bad``.

    The wrapped function gets ``skip_bad`` as a keyword. Without ``--debug``, errors print as
    one line on stderr with exit status 1: ``SsadError`` and ``OSError`` as they are, any other
    exception with a hint to rerun with ``--debug`` for the traceback. Ctrl-C prints
    ``interrupted`` and exits with status 130. Warnings print as one ``warning:`` line each.
    """

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, debug: bool, **kw):
            try:
                with warnings.catch_warnings():
                    if not debug:
                        warnings.showwarning = _show_warning
                    return fn(*args, **kw)
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

        wrapper = click.option("--debug", is_flag=True, help="Show full tracebacks.")(wrapper)
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
