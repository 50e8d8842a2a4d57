"""Model compression for the edgevib CNN (and NSAE-LCN): network slimming, neuron merging,
knowledge distillation, INT8 post-training quantization, a data-free path, and the
:func:`~edgevib.models.compress.pipeline.compress` entry point.

Each method lives in its own module; ``torch`` is imported only by the modules that train
or rebuild networks, ``onnxruntime.quantization`` only by :mod:`.quantize`. See
``docs/compression.md`` for the methods, choices and measured results.
"""

from __future__ import annotations
