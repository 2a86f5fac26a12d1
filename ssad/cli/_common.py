"""What every command shares: ``--debug``, ``--skip-bad`` and one-line errors."""

from __future__ import annotations

import functools
import sys

import click

from ssad.errors import SsadError

COMMANDS: list[click.Command] = []


def command(name: str | None = None, **kwargs):
    """Register a ``ssad`` sub-command with ``--debug`` and ``--skip-bad``.

    The wrapped function gets ``skip_bad`` as a keyword; ``SsadError`` and ``OSError`` become
    one line on stderr and exit status 1 (with ``--debug``: the full traceback).
    """

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, debug: bool, **kw):
            try:
                return fn(*args, **kw)
            except (SsadError, OSError) as e:
                if debug:
                    raise
                click.echo(f"error: {_one_line(e)}", err=True)
                sys.exit(1)
            except KeyboardInterrupt:
                click.echo("interrupted", err=True)
                sys.exit(130)

        wrapper = click.option("--debug", is_flag=True, help="Show full tracebacks.")(wrapper)
        wrapper = click.option(
            "--skip-bad", is_flag=True, help="Skip unreadable images and list them."
        )(wrapper)
        cmd = click.command(name, **kwargs)(wrapper)
        COMMANDS.append(cmd)
        return cmd

    return decorator


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split()) or type(e).__name__
