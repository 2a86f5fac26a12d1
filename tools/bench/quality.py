"""Section ``quality``: train one variant on one data set for a fixed wall-clock budget, evaluate
it on the data set's test images, append a row to a JSON-lines results file and return it.

    python tools/benchmark.py quality --data DIR --variant NAME --minutes M [--results FILE]
        [--preset NAME] [--image-size N] [--mixed-precision auto|none|bf16|fp16]
        [--set KEY=VALUE]... [--workdir DIR] [--extend-from M0]

Variants (config overrides on the preset): ``objective1`` (eq. 1, default distortion),
``objective2`` (eq. 2, which stops early by default), ``plain-ae`` (objective 0: the same model as
an ordinary autoencoder, no distortion, MSE), ``objective1-zeros`` and ``objective1-swap`` (the
other distortions), ``ensemble`` (the ``objective1`` and ``objective2`` runs of the same data set,
preset, size, precision, budget and overrides evaluated together; either is trained only when the
workdir lacks it).
``--set`` overrides a config key for every variant
(``train.learning_rate=1e-3``; the value is read as JSON, else as text). Run directories:
``WORKDIR/<data set>-<preset>-<size>px-<precision>-<M>min[-<key>=<value>...]/<variant>/``
(``eval/`` inside holds the report). ``--extend-from M0`` copies the finished ``M0``-minute run
of the same settings and trains the copy on to ``--minutes`` (the stage due at its clock goes
on), so a curve over budgets costs the longest budget once; its rows say ``extended_from``.
``steps`` in a row is the optimisation steps done (summed for the ensemble);
``seconds_per_image`` is the wall time of ``evaluate`` per test image (read, score, metrics);
``mixed_precision`` is the training precision (evaluation runs in float32).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO / "benchmarks" / "quality.jsonl"
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "ssad-quality"
VARIANTS = {
    "objective1": {"train.objective": 1},
    "objective2": {"train.objective": 2},  # stops early by default
    "plain-ae": {"train.objective": 0, "distortion.kind": "none"},
    "objective1-zeros": {"train.objective": 1, "distortion.kind": "zeros"},
    "objective1-swap": {"train.objective": 1, "distortion.kind": "swap"},
    "ensemble": {},
}
ENSEMBLE = ("objective1", "objective2")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark.py quality", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout data set folder")
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--minutes", required=True, type=float, help="training budget per model")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON-lines file")
    p.add_argument("--preset", default="object", help="config preset or auto (default: object)")
    p.add_argument("--image-size", type=int, help="working resolution (default: the preset's)")
    p.add_argument(
        "--mixed-precision", choices=("auto", "none", "bf16", "fp16"), help="default: the preset's"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="config override for all variants, e.g. train.learning_rate=1e-3 (repeatable)",
    )  # fmt: skip
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="run directories")
    p.add_argument(
        "--extend-from", type=float, metavar="M0",
        help="train a copy of the finished M0-minute run on to --minutes",
    )  # fmt: skip
    args = p.parse_args(argv)
    overrides = {}
    for text in args.overrides:
        overrides.update(parse_set(p, text))
    args.overrides = overrides
    if args.minutes <= 0:
        p.error(f"--minutes must be > 0, got {args.minutes:g}")
    if args.extend_from is not None and not 0 < args.extend_from < args.minutes:
        p.error(f"--extend-from must be between 0 and --minutes, got {args.extend_from:g}")
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        p.error(f"--data {args.data}: not a data set folder with train/ and test/")
    return args


def parse_set(parser: argparse.ArgumentParser, text: str) -> dict:
    """``{KEY: VALUE}`` of a ``KEY=VALUE`` option: the value read as JSON, else as text; a
    comma-separated list (``a,b``) becomes a list."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        parser.error(f"{text!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-3")
    try:
        return {key: json.loads(value)}
    except json.JSONDecodeError:
        pass
    if "," in value and not value.startswith(("[", "{")):
        return {key: [parse_set(parser, f"{key}={v}")[key] for v in value.split(",")]}
    return {key: value}


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    commit = git_commit()  # the code this run starts with (the tree may change meanwhile)
    from ssad.config import Config
    from ssad.evaluation import evaluate
    from ssad.run import RunDir
    from ssad.training import training_config

    preset = args.preset
    if preset == "auto":
        from ssad.inspection import auto_preset

        preset, why = auto_preset(args.data)
        print(why, file=sys.stderr)
    base = training_config(
        Config.preset(preset),
        image_size=args.image_size,
        max_minutes=args.minutes,
        mixed_precision=args.mixed_precision,
    ).override(args.overrides)
    from ssad.precision import resolve_precision

    dataset = args.data.resolve().name
    precision = resolve_precision(base.train.mixed_precision)[0]
    size = base.data.resolution

    def group(minutes: float) -> Path:
        name = f"{dataset}-{args.preset}-{size}px-{precision}-{minutes:g}min"
        return args.workdir / (name + "".join(f"-{k}={v}" for k, v in args.overrides.items()))

    members = ENSEMBLE if args.variant == "ensemble" else (args.variant,)
    run_dirs, steps = [], 0
    for variant in members:
        run_dir = group(args.minutes) / variant
        if args.extend_from is not None:
            steps += extend_variant(base, variant, args.data, group(args.extend_from) / variant,
                                    run_dir)  # fmt: skip
        elif args.variant == "ensemble" and RunDir(run_dir).is_finished():
            steps += RunDir(run_dir).read_history()[-1]["step"]
        else:
            steps += train_variant(base, variant, args.data, run_dir)
        run_dirs.append(run_dir)
    found, _ = evaluate(
        run_dirs, args.data, run_dirs[0].parent / args.variant / "eval", progress=True
    )
    row = {
        "dataset": dataset,
        "variant": args.variant,
        "minutes": args.minutes,
        "preset": args.preset if preset == args.preset else f"{args.preset}:{preset}",
        "resolution": found["resolution"],
        "mixed_precision": precision,
        "overrides": args.overrides,
        "image_auroc": _round(found["image_auroc"]),
        "pixel_auroc": _round(found["pixel_auroc"]),
        "aupro": _round(found["aupro"]),
        "seconds_per_image": round(found["seconds"] / found["n_images"], 4),
        "steps": steps,
        "seed": base.train.seed,
        "extended_from": args.extend_from,
        "normalize": found["normalize"],  # what score.normalize resolved to
        "image_normalize": found.get("image_normalize"),  # ... image_normalize (None: same)
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }
    append_row(args.results, row)
    return row


def train_variant(base, variant: str, data: Path, run_dir: Path) -> int:
    """Train ``variant`` from scratch into ``run_dir``; the number of steps done."""
    from ssad.training import train

    return train(base.override(VARIANTS[variant]), data, run_dir, resume=False).steps


def extend_variant(base, variant: str, data: Path, source: Path, run_dir: Path) -> int:
    """Copy the finished run ``source`` to ``run_dir`` and train it on to ``base``'s budget;
    the number of steps done in all."""
    import shutil

    from ssad.run import RunDir
    from ssad.training import train

    if not RunDir(source).is_finished():
        raise SystemExit(f"--extend-from: {source} holds no finished run")
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("eval"))
    return train(base.override(VARIANTS[variant]), data, run_dir, resume=True).steps


def append_row(path: Path, row: dict) -> None:
    """Add ``row`` as the last line of the JSON-lines file ``path`` (created when missing)."""
    from ssad.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(row) + "\n")


def git_commit() -> str:
    """The repository's commit, ``-dirty`` when the working tree has changes."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
