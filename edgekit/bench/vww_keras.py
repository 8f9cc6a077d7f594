"""The MLPerf Tiny visual wake words architecture as an int8 .tflite, made with TensorFlow.

The reference ``vww_96_int8.tflite`` is not in ../shared/peers, so ``edgekit bench mlperf-tiny``
makes a stand-in the way the reference was made: MLPerf Tiny's Keras MobileNetV1 (width 0.25,
96x96x3 input, conv 3x3/2 with 8 filters, 13 depthwise-separable blocks, 3x3 average pool,
flatten, dense to 2 classes, softmax) converted by TFLiteConverter with full-integer
quantization (int8 input and output). The weights are random, not trained: batch-norm
statistics come from one batch of random images and the dense layer is scaled so the two
logits spread over the softmax's range. The operators, their quantization parameters and the
layer shapes are what a user's trained model has; only its accuracy is meaningless.

Needs the ``keras`` extra (``pip install 'edgekit[keras]'``: tensorflow-cpu).
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ToolchainError

#: (pointwise filters, depthwise stride) of the 13 depthwise-separable blocks at width 0.25
BLOCKS = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [(256, 2), (256, 1)]


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise ToolchainError("making the visual wake words model needs TensorFlow: pip install 'edgekit[keras]' "
                             "(or pass the reference vww_96_int8.tflite with --vww-model)") from None
    return tf


@contextlib.contextmanager
def _stdout_to_stderr():
    """TensorFlow prints to stdout while it converts (the SavedModel's endpoints from Python, the
    converter's settings from C++); ``--json`` promises stdout holds only the JSON, so both file
    descriptor 1 and ``sys.stdout`` point at stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def mobilenet_v1_vww(tf, softmax: bool = True):
    L = tf.keras.layers
    inp = L.Input((96, 96, 3))

    def conv_bn_relu(x, filters, kernel, stride, depthwise=False):
        conv = (L.DepthwiseConv2D(kernel, strides=stride, padding="same") if depthwise
                else L.Conv2D(filters, kernel, strides=stride, padding="same"))
        x = L.BatchNormalization(momentum=0.0)(conv(x))  # momentum 0: statistics of the last batch
        return L.Activation("relu")(x)

    x = conv_bn_relu(inp, 8, 3, 2)
    for filters, stride in BLOCKS:
        x = conv_bn_relu(x, None, 3, stride, depthwise=True)
        x = conv_bn_relu(x, filters, 1, 1)
    x = L.AveragePooling2D(pool_size=int(x.shape[1]))(x)
    x = L.Flatten()(x)
    out = L.Dense(2, activation="softmax" if softmax else None)(x)
    return tf.keras.Model(inp, out)


def make_vww_tflite(path: str | Path, seed: int = 0, calibration: int = 64, int8_io: bool = True) -> Path:
    """Write the int8 stand-in for MLPerf Tiny's VWW model to ``path``; returns the path.
    ``int8_io=False`` keeps the converter's default float input and output (QUANTIZE and
    DEQUANTIZE at the ends), which edgekit imports too."""
    with _stdout_to_stderr():
        tflite = _convert(seed, calibration, int8_io)
    path = Path(path)
    path.write_bytes(tflite)
    return path


def _convert(seed: int, calibration: int, int8_io: bool) -> bytes:
    tf = _tensorflow()
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = mobilenet_v1_vww(tf)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("f4"),
                               rng.normal(0.1, 0.3, beta.shape).astype("f4"), mean, var])
    images = rng.uniform(0, 1, (calibration, 96, 96, 3)).astype("f4")
    model(images, training=True)  # batch-norm statistics from these images
    dense = model.layers[-1]
    kernel, _ = dense.get_weights()
    features = tf.keras.Model(model.input, model.layers[-2].output)(images).numpy()
    kernel = kernel / (features @ kernel).std(axis=0, keepdims=True) * 1.5  # logits spread about +-1.5
    dense.set_weights([kernel, -(features @ kernel).mean(axis=0)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()
