"""Distributed training: ``mirrored`` over 2 logical CPU devices and ``multiworker`` with two
local worker processes. Each runs in subprocesses (devices and TF_CONFIG are process-wide)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
from test_training import make_images, run_python, small_config

_MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import ssad
from ssad.errors import ConfigError
from ssad.training import train
cfg = ssad.Config.load(sys.argv[1])
try:  # a global batch of 3 cannot be split over 2 replicas
    train(cfg.override({"train.stages": [{"crop": 32, "batch_size": 3, "fraction": 1}]}),
          sys.argv[2], sys.argv[3] + "/odd", verbose=0)
except ConfigError as e:
    print("ODD", e)
result = train(cfg, sys.argv[2], sys.argv[3] + "/run", verbose=0)
print("RESULT", result.steps, result.loss)
"""


def test_mirrored_over_two_logical_cpus(tmp_path):
    images = make_images(tmp_path / "images", n=4)
    small_config(steps=4, **{"train.strategy": "mirrored"}).save(tmp_path / "cfg.json")
    out = run_python(_MIRRORED, tmp_path / "cfg.json", images, tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not a multiple of the 2 replicas" in out.stdout
    steps, loss = out.stdout.split("RESULT")[1].split()
    assert int(steps) == 4 and np.isfinite(float(loss))
    assert (tmp_path / "run" / "model.keras").is_file()
    assert (tmp_path / "run" / "calibration.json").is_file()


_WORKER = """
import sys
import numpy as np, ssad
from ssad.training import train
result = train(ssad.Config.load(sys.argv[1]), sys.argv[2], sys.argv[3], verbose=0)
np.savez(sys.argv[4], *result.model.get_weights())
print("RESULT", result.steps)
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_two_local_workers_end_with_equal_weights(tmp_path):
    images = make_images(tmp_path / "images", n=4)
    cfg = small_config(steps=4, **{"train.strategy": "multiworker", "train.max_minutes": 30})
    cfg.save(tmp_path / "cfg.json")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        args = [tmp_path / "cfg.json", images, tmp_path / "run", tmp_path / f"w{index}.npz"]
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, *map(str, args)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs = []
    try:
        for w in workers:
            outputs.append(w.communicate(timeout=300))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, stderr[-3000:]
        assert "RESULT 4" in stdout
    with np.load(tmp_path / "w0.npz") as a, np.load(tmp_path / "w1.npz") as b:
        assert len(a.files) == len(b.files) > 0
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    # only the chief (worker 0) wrote the run directory
    assert (tmp_path / "run" / "model.keras").is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4]
