"""Which floating-point precision to train in: ``train.mixed_precision`` and its ``auto``.

``auto`` picks bfloat16 mixed precision on CPUs with AMX or AVX512-BF16 and on GPUs of compute
capability 8.0 or newer, float16 on older GPUs and float32 elsewhere. Weights and the saved
model stay float32 in every case; the output layer computes in float32.
"""

from __future__ import annotations

from pathlib import Path

POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of this machine's CPU (empty where ``/proc/cpuinfo`` is missing)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def resolve_precision(
    name: str, flags: set[str] | None = None, gpus: list | None = None
) -> tuple[str, str]:
    """``(precision, reason)``: ``name`` itself unless it is ``auto``.

    ``flags``: CPU feature flags (default: this CPU's); ``gpus``: compute capabilities
    ``(major, minor)`` of the visible GPUs (default: asked from TensorFlow).
    """
    if name != "auto":
        return name, "as configured"
    if gpus is None:
        gpus = _gpu_capabilities()
    if gpus:
        if all(cc >= (8, 0) for cc in gpus):
            return "bf16", "auto: GPU with bfloat16 (compute capability >= 8.0)"
        return "fp16", "auto: GPU without bfloat16"
    found = (cpu_flags() if flags is None else flags) & set(_BF16_CPU_FLAGS)
    if found:
        return "bf16", f"auto: CPU with {', '.join(sorted(found))}"
    return "none", "auto: no bfloat16 unit found, float32"


def _gpu_capabilities() -> list[tuple[int, int]]:
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities
