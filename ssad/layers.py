"""Custom layers, registered so that saved models load in safe mode without ``custom_objects``,
and the dilated convolution they and the detection graph share."""

from __future__ import annotations

import keras
import tensorflow as tf

# Cut taps that only meet padding; ``tools/benchmark.py train`` turns it off to measure the gain.
PRUNE_PADDING_TAPS = True


def dilated_conv2d(
    inputs, kernel, dilation_rate, padding: str = "SAME", strides=1, export: bool = False
):
    """``tf.nn.conv2d`` with ``dilation_rate``, minus the taps that can never meet data.

    With ``SAME`` padding and stride 1, a tap at offset ``d`` reads the input ``d`` pixels
    away, which lies inside a map of side ``n`` only when ``|d| < n``: taps farther out only
    ever multiply padding zeros. Where the map's size is known when the graph is built, they
    are cut from the kernel (a 5x5 kernel with rate >= the map's side becomes 1x1), which
    gives the same result with less work. Unknown sizes keep the whole kernel; with
    ``export`` (inference graphs only: TensorFlow has no gradient for it), their SAME padding
    is written out as explicit pads, which exporters convert with dilations too.
    """
    rates = (dilation_rate, dilation_rate) if isinstance(dilation_rate, int) else dilation_rate
    rates = list(rates)
    padding = padding.upper()
    same_1 = padding == "SAME" and strides in (1, (1, 1), [1, 1])  # SAME, stride 1
    if PRUNE_PADDING_TAPS and same_1:
        for axis in (0, 1):
            size, taps, rate = inputs.shape[1 + axis], kernel.shape[axis], rates[axis]
            centre = taps // 2
            if size is None or taps % 2 == 0 or rate * centre < size:
                continue
            keep = min(centre, (size - 1) // rate)  # taps on each side that can meet data
            index = slice(centre - keep, centre + keep + 1)
            kernel = kernel[index] if axis == 0 else kernel[:, index]
            if keep == 0:
                rates[axis] = 1
    if export and same_1 and None in inputs.shape[1:3]:
        # exporters turn SAME on maps of unknown size into auto_pad, which ONNX Runtime does
        # not run with dilations
        totals = [rate * (taps - 1) for rate, taps in zip(rates, kernel.shape[:2], strict=True)]
        padding = [[0, 0], *([t // 2, t - t // 2] for t in totals), [0, 0]]
    return tf.nn.conv2d(inputs, kernel, strides=strides, padding=padding, dilations=rates)


@keras.saving.register_keras_serializable(package="ssad")
class DilatedConv2D(keras.layers.Conv2D):
    """``Conv2D`` that runs its dilation through :func:`dilated_conv2d`.

    Keras runs a dilated convolution through space-to-batch, which pads small feature maps
    many times over for the SDC's rates of 16 and 32; TensorFlow's (oneDNN) ``conv2d`` takes
    the rate as it is, and taps that fall into the padding are skipped. Same weights, same
    results. Channels-last only.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError("DilatedConv2D supports data_format='channels_last' only")

    def convolution_op(self, inputs, kernel):
        return dilated_conv2d(inputs, kernel, self.dilation_rate, self.padding, self.strides)
