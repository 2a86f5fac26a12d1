"""Pictures of a detector's results: heatmap overlays, ROC and PRO curves, the evaluation
gallery and ``index.html``.

Matplotlib draws through its Agg canvas directly (no pyplot, no global backend change).
Overlays colour the heatmap from 0 (dark) through the pixel threshold (the middle of the
colour map) to twice the threshold (bright), outline the predicted mask in cyan and the
ground truth, when known, in green.
"""

from __future__ import annotations

import heapq
import html
import io
import itertools
import json
import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from ssad.files import atomic_write_bytes, atomic_write_text
from ssad.images import encode_png, resize

PREDICTION_COLOUR = (0.0, 0.9, 1.0)
TRUTH_COLOUR = (0.2, 1.0, 0.2)
_COLOURMAP = matplotlib.colormaps["inferno"]


def overlay(
    image: np.ndarray, heatmap: np.ndarray, threshold: float, truth: np.ndarray | None = None
) -> np.ndarray:
    """uint8 ``[h, w, 3]``: ``image`` blended with the coloured ``heatmap``, the outline of
    ``heatmap >= threshold`` in cyan and of the ``truth`` mask in green."""
    colours = _COLOURMAP(np.clip(heatmap / (2.0 * threshold), 0.0, 1.0))[..., :3]
    out = 0.55 * np.asarray(image, np.float32) + 0.45 * colours
    width = max(1, round(max(heatmap.shape) / 256))
    for mask, colour in ((heatmap >= threshold, PREDICTION_COLOUR), (truth, TRUTH_COLOUR)):
        if mask is not None and mask.any():
            out[_outline(mask, width)] = colour
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=1)


# -- the gallery ---------------------------------------------------------------------------------


class Gallery:
    """Keeps the ``size`` worst and ``size`` best classified images seen.

    The margin of an image is how far its score lies on the right side of the image threshold,
    relative to it (negative: misclassified). An image that enters a top list is kept shrunk
    to at most ``PANEL_SIDE`` pixels and drawn only at the end, so memory and time stay
    bounded whatever the number of images.
    """

    PANEL_SIDE = 320

    def __init__(self, size: int, pixel_threshold: float, image_threshold: float):
        self.size = size
        self.pixel_threshold = pixel_threshold
        self.image_threshold = image_threshold
        self._worst: list = []  # min-heaps keyed by -margin and margin
        self._best: list = []
        self._order = itertools.count()

    def offer(self, name, defect, label, score, image, heatmap, truth=None) -> None:
        margin = (score - self.image_threshold) / max(abs(self.image_threshold), 1e-12)
        margin = margin if label else -margin
        entry = {"name": name, "defect": defect, "label": bool(label), "score": float(score)}
        for heap, key in ((self._worst, -margin), (self._best, margin)):
            if self.size and (len(heap) < self.size or key > heap[0][0]):
                if "pictures" not in entry:
                    entry["pictures"] = self._shrink(image, heatmap, truth)
                item = (key, next(self._order), entry)
                if len(heap) < self.size:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)

    def _shrink(self, image, heatmap, truth):
        h, w = heatmap.shape
        scale = min(1.0, self.PANEL_SIDE / max(h, w))
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        image = resize(np.asarray(image, np.float32), h, w)
        heatmap = resize(np.asarray(heatmap, np.float32)[..., None], h, w)[..., 0]
        if truth is not None:
            truth = resize(np.asarray(truth, np.uint8)[..., None], h, w, "nearest")[..., 0] > 0
        return image, heatmap, truth

    def _png(self, entry: dict) -> bytes:
        """The input and its overlay side by side, as PNG."""
        image, heatmap, truth = entry["pictures"]
        gap = np.ones((image.shape[0], 4, 3), np.uint8) * 255
        picture = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        coloured = overlay(image, heatmap, self.pixel_threshold, truth)
        return encode_png(np.concatenate([picture, gap, coloured], axis=1))

    def sections(self) -> list[tuple[str, list[tuple[dict, bytes]]]]:
        """``[(title, [(entry, png)])]``: false positives, false negatives (most wrong first),
        the closest correct calls, then the best detected defects and cleanest good images."""
        worst = [e for _, _, e in sorted(self._worst, reverse=True)]
        shown = {id(e) for e in worst}
        best = [e for _, _, e in sorted(self._best, reverse=True) if id(e) not in shown]
        wrong = {id(e) for e in worst if (e["score"] >= self.image_threshold) != e["label"]}
        groups = [
            ("False positives", [e for e in worst if id(e) in wrong and not e["label"]]),
            ("False negatives", [e for e in worst if id(e) in wrong and e["label"]]),
            ("Closest correct calls", [e for e in worst if id(e) not in wrong]),
            ("Best detected defects", [e for e in best if e["label"]]),
            ("Cleanest good images", [e for e in best if not e["label"]]),
        ]
        return [(title, [(e, self._png(e)) for e in entries]) for title, entries in groups]


# -- figures -------------------------------------------------------------------------------------


def curves_png(curves: dict, title: str, xlabel: str, ylabel: str, x_max: float = 1.0) -> bytes:
    """A PNG of the curves ``{label: (x, y)}``; the first is drawn bold, the rest thin."""
    figure = Figure(figsize=(5, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for i, (label, (x, y)) in enumerate(curves.items()):
        axes.plot(x, y, label=label, linewidth=2.2 if i == 0 else 1.0)
    if x_max == 1.0:
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    axes.set(xlim=(0, x_max), ylim=(0, 1.01), title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# -- the printed table and index.html ------------------------------------------------------------

_COLUMNS = (
    ("images", "n_images", "{:d}"),
    ("image AUROC", "image_auroc", "{:.4f}"),
    ("pixel AUROC", "pixel_auroc", "{:.4f}"),
    ("AUPRO@0.3", "aupro", "{:.4f}"),
    ("F1 image", "f1_image", "{:.4f}"),
    ("F1 pixel", "f1_pixel", "{:.4f}"),
)


def _rows(result: dict) -> list[tuple[str, list[str]]]:
    rows = [("all", result)] + list(result.get("per_defect", {}).items())
    return [
        (name, ["-" if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in _COLUMNS])
        for name, r in rows
    ]


def format_table(result: dict) -> str:
    """The evaluation's metrics as a plain-text table, one line per defect type."""
    names = [name for name, _ in _rows(result)]
    first = max(len("defect"), *map(len, names))
    header = "defect".ljust(first) + "".join(f"  {title:>12}" for title, _, _ in _COLUMNS)
    lines = [header, "-" * len(header)]
    for name, cells in _rows(result):
        lines.append(name.ljust(first) + "".join(f"  {c:>12}" for c in cells))
    lines.append(
        f"thresholds: pixel {result['threshold']:.6g}, image {result['image_threshold']:.6g}"
        f" ({result['threshold_method']}); metrics at {_where(result)}"
    )
    return "\n".join(lines)


def _where(result: dict) -> str:
    side = result["resolution"]
    return "each image's own size" if side is None else f"{side}x{side} px"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.curves img { width: 420px; margin-right: 1em; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure img { width: 440px; display: block; image-rendering: pixelated; }
figcaption { font-size: 0.85em; max-width: 440px; }
.note { color: #555; font-size: 0.9em; }
"""


def write_report(out_dir: str | os.PathLike, result: dict, curves: dict, gallery: Gallery) -> None:
    """Write ``roc.png``, ``pro.png`` (with pixel masks), ``gallery/*.png`` and ``index.html``
    into ``out_dir`` (each file atomically). ``curves``: ``{"image_roc": {label: (x, y)},
    "pixel_roc": ..., "pro": ...}``, any of them empty."""
    out = Path(out_dir)
    figures = []
    for key, file, title, xlabel, ylabel, x_max in (
        ("image_roc", "roc_image.png", "Image-level ROC", "FPR", "TPR", 1.0),
        ("pixel_roc", "roc_pixel.png", "Pixel-level ROC", "FPR", "TPR", 1.0),
        ("pro", "pro.png", "Per-region overlap", "FPR", "PRO", 0.3),
    ):
        if curves.get(key):
            atomic_write_bytes(out / file, curves_png(curves[key], title, xlabel, ylabel, x_max))
            figures.append(file)
    (out / "gallery").mkdir(exist_ok=True)
    sections = []
    for index, (title, entries) in enumerate(gallery.sections()):
        items = []
        for i, (e, png) in enumerate(entries):
            file = f"gallery/{index}_{i}.png"
            atomic_write_bytes(out / file, png)
            items.append((file, e))
        sections.append((title, items))
    atomic_write_text(out / "index.html", _html(result, figures, sections, gallery))


def _html(result: dict, figures: list[str], sections, gallery: Gallery) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(t)}</th>" for t, _, _ in _COLUMNS)
    body = "".join(
        f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        for name, cells in _rows(result)
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ssad evaluation</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>ssad evaluation</h1>",
        f"<p class='note'>Data: {esc(str(result['data_dir']))}<br>Runs: "
        f"{esc(', '.join(result['run_dirs']))}<br>{result['n_images']} images, metrics at "
        f"{_where(result)}, {result['seconds']:.1f} s."
        f" Thresholds: pixel {result['threshold']:.6g}, image {result['image_threshold']:.6g}"
        f" ({esc(result['threshold_method'])}).</p>",
        f"<table><tr><th>defect</th>{head}</tr>{body}</table>",
        "<p class='note'>AUPRO: per-region overlap integrated up to FPR 0.3, divided by 0.3. "
        "<a href='metrics.json'>metrics.json</a>, <a href='scores.csv'>scores.csv</a></p>",
        "<div class='curves'>" + "".join(f"<img src='{f}' alt='{f}'>" for f in figures) + "</div>",
        "<h2>Gallery</h2><p class='note'>Left: input; right: heatmap (threshold at mid-colour), "
        "predicted mask outlined in cyan, ground truth in green.</p>",
    ]
    for title, items in sections:
        if not items:
            continue
        parts.append(f"<h3>{esc(title)} ({len(items)})</h3>")
        for file, e in items:
            verdict = "anomalous" if e["score"] >= gallery.image_threshold else "good"
            parts.append(
                f"<figure><img src='{file}' alt='{esc(e['name'])}'><figcaption>"
                f"{esc(e['name'])} ({esc(e['defect'])}): score {e['score']:.4g} &rarr; "
                f"{verdict}</figcaption></figure>"
            )
    parts.append(f"<details><summary>metrics.json</summary><pre>{esc(_json(result))}</pre>")
    parts.append("</details></body></html>\n")
    return "\n".join(parts)


def _json(result: dict) -> str:
    return json.dumps(result, indent=2)
