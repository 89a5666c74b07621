"""bnaudit: find batch-normalization misuse in TensorFlow and Keras code and artifacts."""

__version__ = "0.1.0"
