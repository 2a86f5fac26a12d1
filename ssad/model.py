"""The paper's autoencoder (Table 1): a plain conv encoder, stacked dilated convolutions (SDC)
at 1/8 resolution, a transposed-conv decoder and a sigmoid 1x1 output without normalisation.

Built from stock Keras layers plus the registered ``ssad>DilatedConv2D`` and
``ssad>FusedBatchNormalization``, so a saved ``.keras`` file loads in safe mode with no
``custom_objects`` once ``ssad`` is imported.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ssad.batchnorm import FusedBatchNormalization
from ssad.config import ModelConfig
from ssad.layers import DilatedConv2D


def _channels(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _conv_bn_relu(x, filters: int, kernel: int, name: str, momentum: float, dilation: int = 1):
    conv = DilatedConv2D if dilation > 1 else layers.Conv2D
    x = conv(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False, name=name)(x)
    x = FusedBatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _sdc_block(x, cfg: ModelConfig, index: int):
    """Six parallel 5x5 convolutions with dilation 1..32, concatenated, then a 3x3 conv."""
    filters = _channels(cfg.sdc_filters, cfg.width)
    branches = [
        _conv_bn_relu(x, filters, cfg.sdc_kernel, f"sdc{index}_d{rate}", cfg.bn_momentum, rate)
        for rate in cfg.dilation_rates
    ]
    x = layers.Concatenate(name=f"sdc{index}_concat")(branches)
    fused = filters * len(cfg.dilation_rates)
    return _conv_bn_relu(x, fused, 3, f"sdc{index}_fuse", cfg.bn_momentum)


def build_autoencoder(
    cfg: ModelConfig | None = None, name: str = "ssad_autoencoder"
) -> keras.Model:
    """Build the SDC autoencoder. Input ``(None, None, 3)`` in [0, 1], sides multiples of 8;
    output the same shape, in [0, 1] (float32 also under a mixed-precision policy)."""
    cfg = cfg or ModelConfig()
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    for level, filters in enumerate(cfg.encoder_filters, start=1):
        f = _channels(filters, cfg.width)
        x = _conv_bn_relu(x, f, 3, f"enc{level}_conv1", cfg.bn_momentum)
        x = _conv_bn_relu(x, f, 3, f"enc{level}_conv2", cfg.bn_momentum)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    for index in range(1, cfg.sdc_blocks + 1):
        x = _sdc_block(x, cfg, index)
    for level, (up, mid, out) in enumerate(cfg.decoder_filters, start=1):
        x = layers.Conv2DTranspose(
            _channels(up, cfg.width),
            3,
            strides=2,
            padding="same",
            use_bias=False,
            name=f"dec{level}_up",
        )(x)
        x = FusedBatchNormalization(momentum=cfg.bn_momentum, name=f"dec{level}_up_bn")(x)
        x = layers.ReLU(name=f"dec{level}_up_relu")(x)
        x = _conv_bn_relu(x, _channels(mid, cfg.width), 3, f"dec{level}_conv1", cfg.bn_momentum)
        x = _conv_bn_relu(x, _channels(out, cfg.width), 3, f"dec{level}_conv2", cfg.bn_momentum)
    outputs = layers.Conv2D(3, 1, activation="sigmoid", dtype="float32", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=name)


def init_output_bias(model: keras.Model, mean_rgb) -> None:
    """Start the sigmoid output at the training images' mean colour ``mean_rgb`` (3 values in
    [0, 1]): its bias becomes logit(mean). The network then learns the image content rather
    than first spending hundreds of steps moving one bias from 0.5 to the data's brightness."""
    mean = np.clip(np.asarray(mean_rgb, dtype="float64"), 0.02, 0.98)
    model.get_layer("reconstruction").bias.assign(np.log(mean / (1.0 - mean)).astype("float32"))


def count_flops(model: keras.Model, height: int, width: int, useful: bool = False) -> int:
    """Multiply-add FLOPs (2 per MAC) of the convolutions for one ``height x width`` image.

    A transposed convolution is counted at its input positions (each scatters k*k*cout).
    ``useful``: count only the products that meet data, not padding: a tap at offset ``d``
    along an axis of ``n`` pixels meets data at ``n - |d|`` output positions (none once
    ``|d| >= n``, which the SDC's large dilations reach on small maps).
    """
    flops = 0
    h, w = height, width
    for layer in model.layers:
        if isinstance(layer, layers.MaxPooling2D):
            h, w = h // 2, w // 2
        elif isinstance(layer, layers.Conv2DTranspose):
            kh, kw, cout, cin = layer.kernel.shape
            flops += 2 * h * w * kh * kw * cin * cout
            h, w = h * 2, w * 2
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            if useful and layer.padding == "same":
                rh, rw = layer.dilation_rate
                rows = sum(max(0, h - abs((i - kh // 2) * rh)) for i in range(kh))
                cols = sum(max(0, w - abs((j - kw // 2) * rw)) for j in range(kw))
                flops += 2 * rows * cols * cin * cout
            else:
                flops += 2 * h * w * kh * kw * cin * cout
    return flops


def receptive_radius(model: keras.Model) -> int:
    """Input pixels on each side of a position that its output can depend on (an upper
    bound): what an overlap between tiles needs for tiled and whole-image results to agree."""
    reach = {}  # id(tensor) -> (radius in input pixels, input pixels per step of that map)
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            reach[id(layer.output)] = (0.0, 1.0)
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        radius = max(reach[id(t)][0] for t in inputs)
        jump = reach[id(inputs[0])][1]
        if isinstance(layer, layers.Conv2DTranspose):
            jump /= layer.strides[0]
            radius += layer.kernel_size[0] * jump
        elif isinstance(layer, layers.Conv2D):
            radius += (layer.kernel_size[0] - 1) / 2 * layer.dilation_rate[0] * jump
            jump *= layer.strides[0]
        elif isinstance(layer, layers.MaxPooling2D):
            radius += (layer.pool_size[0] - 1) * jump
            jump *= layer.strides[0]
        reach[id(layer.output)] = (radius, jump)
    return int(np.ceil(reach[id(model.outputs[0])][0]))
