"""Section ``corruption-area``: how much of a training crop the corruption's mask covers, and
what that makes of lambda in eq. (1). Each term is a mean over its region, so a corrupted pixel
weighs ``(1 - lam) / lam * (1 - a) / a`` times a normal one when the (soft) mask covers the
share ``a`` of the crop."""

from __future__ import annotations

import argparse

import numpy as np

BATCH = 64


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="benchmark.py corruption-area")
    p.add_argument("--preset", default="object", help="config preset (default: object)")
    p.add_argument("--crop", type=int, default=128, help="training crop side (default: 128)")
    p.add_argument("--crops", type=int, default=512, help="crops to corrupt (default: 512)")
    p.add_argument("--lams", default="0.5,0.9", help="lambda values to report")
    args = p.parse_args(argv)
    import tensorflow as tf

    from ssad.config import Config
    from ssad.data.distort import distort

    cfg = Config.preset(args.preset)
    x = tf.random.uniform([BATCH, args.crop, args.crop, 3], seed=0)
    shares = []
    for seed in range(max(1, args.crops // BATCH)):
        _, mask = distort(x, cfg.distortion, seed=seed, resolution=cfg.data.resolution)
        shares.extend(mask[..., 0].numpy().reshape(BATCH, -1).mean(axis=1))
    a = np.asarray(shares, np.float64)
    normal_per_corrupted = float(np.median((1 - a) / np.maximum(a, 1e-12)))
    return {
        "section": "corruption-area",
        "preset": args.preset,
        "crop": args.crop,
        "crops": len(a),
        "mask_share_mean": round(float(a.mean()), 4),
        "mask_share_median": round(float(np.median(a)), 4),
        # median over crops of the weight of a corrupted pixel relative to a normal one
        "corrupted_pixel_weight": {
            lam: round((1 - float(lam)) / float(lam) * normal_per_corrupted, 2)
            for lam in args.lams.split(",")
        },
    }
