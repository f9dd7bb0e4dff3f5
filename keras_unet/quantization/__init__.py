"""Quantization-aware training (QAT) for keras_unet models on Keras 3.

`quantize_aware(model)` returns a trainable copy of a trained `keras_unet.UNet` in which
weights (per output channel, symmetric int8) and activations (per tensor, asymmetric
uint8 grid, ranges tracked by moving averages while training and frozen at inference)
pass through fake quantization, with batch norm folded into the convolution before it.
A few epochs of fine-tuning (best towards the float model's own outputs: `distillation`)
teach the weights to live with int8 rounding; `keras_unet.export.qat` then writes
full-int8 TFLite (from the fake-quant ops, no representative dataset) and QDQ ONNX (with
the learned scales and zero points).

**Design.** tensorflow-model-optimization (tfmot) wraps Keras 2 layers; it cannot read a
Keras 3 model, and Keras 3's own `quantize()` is inference-time weight quantization. Its
recipe is kept (the default 8-bit registry: per-channel symmetric weights, per-tensor
moving-average activations, one quantizer after each fused conv+ReLU, batch norm
folded), on a different mechanism:

1. `flatten`: the keras_unet composite layers (ConvBlock, EncoderStage, DecoderBlock,
   AttentionGate) are expanded into the Keras layers and `keras.ops` their own `call`
   uses, by tracing `call` on the graph's tensors. The result is one functional graph of
   primitives whatever the encoder (the `keras.applications` encoders are such graphs
   already), and the layers' code stays the one definition of what they compute. Giving
   each composite a "quantization mode" instead would spread quantizer placement over
   every layer and still leave the `keras.applications` layers to a graph rewrite.
2. `plan`: each node is classified (`registry`, the 8-bit registry) and the graph decides
   where quantizers go: where TFLite's int8 kernels requantize (after a ReLU fused into
   its convolution, not between them), and which batch norms fold into which convolution.
3. `transform`: `keras.models.clone_model(..., call_function=...)` rebuilds the graph
   with `QuantizeAware*` convolutions (batch norm folded with the moving statistics, then
   fixed, as QAT recipes do for fine-tuning) and `ActivationQuantizer` layers.

On TensorFlow the fake quantization is `tf.quantization.fake_quant_with_min_max_vars` and
`..._per_channel` in the traced graph: the ops the TFLite converter turns into int8
kernels. **Backends:** `quantize_aware` refuses JAX and PyTorch with a `ValueError`
(exports need TensorFlow; the layers themselves would run on any backend through
`keras.quantizers.fake_quant_with_min_max_vars`, so a saved QAT model still loads there).

Layers the quantizer does not know are named in a `ValueError` (see `registry`): their
int8 behaviour cannot be simulated, and leaving them float would not give an all-int8 file.

Example:
```python
import keras
import keras_unet
from keras_unet.quantization import distillation_loss, is_quantize_aware, quantize_aware

model = keras_unet.UNet((32, 32, 3), filters=4, depth=2, use_batchnorm=True)
qat = quantize_aware(model)
qat.compile(keras.optimizers.SGD(1e-3, momentum=0.9), loss=distillation_loss(model))
is_quantize_aware(qat)   # True
```
"""

from keras_unet.quantization.distillation import distillation_dataset, distillation_loss
from keras_unet.quantization.flatten import flatten
from keras_unet.quantization.layers import (
    ActivationQuantizer,
    QuantizeAwareConv2D,
    QuantizeAwareConv2DTranspose,
    QuantizeAwareDepthwiseConv2D,
)
from keras_unet.quantization.model import QuantizeAwareModel
from keras_unet.quantization.transform import (
    check_ranges,
    float_copy,
    is_quantize_aware,
    quantize_aware,
    track_ranges,
)

__all__ = [
    "ActivationQuantizer",
    "QuantizeAwareConv2D",
    "QuantizeAwareConv2DTranspose",
    "QuantizeAwareDepthwiseConv2D",
    "QuantizeAwareModel",
    "check_ranges",
    "distillation_dataset",
    "distillation_loss",
    "flatten",
    "float_copy",
    "is_quantize_aware",
    "quantize_aware",
    "track_ranges",
]
