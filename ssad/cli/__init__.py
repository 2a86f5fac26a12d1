"""The ``ssad`` command line: a thin layer over the Python API, one module per command.

Every command takes ``--debug`` (show tracebacks); those that read images take ``--skip-bad``
(go on past unreadable images and list them). Errors a user can act on print as one line and
exit with status 1.
"""

from __future__ import annotations

import click

# Importing a command module registers its command (keep this list sorted).
from ssad.cli import (  # noqa: F401, E402
    calibrate,
    demo,
    distort,
    evaluate,
    export,
    info,
    inspect,
    make_demo_data,
    predict,
    train,
)
from ssad.cli._common import COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssad")
def main() -> None:
    """Self-supervised autoencoders for visual anomaly detection.

    Train on defect-free images, then find and outline defects in new ones.
    """


for _command in COMMANDS:
    main.add_command(_command)
