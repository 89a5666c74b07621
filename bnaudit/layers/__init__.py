"""The corrected batch norm that the analyzer's fixes point to.

``batch_norm(inputs, training, ...)`` for TF1 graph code and ``BatchNorm`` for
Keras 3, over one core (``bnaudit.layers.core``).  Ships with the ``tf`` extra;
importing this package imports TensorFlow and Keras, so nothing else in
bnaudit imports it.
"""

from bnaudit.layers.functional import batch_norm
from bnaudit.layers.keras_layer import REGISTERED_NAME, BatchNorm

__all__ = ["batch_norm", "BatchNorm", "REGISTERED_NAME"]
