"""Vision Trainer: upload labelled photos, train a classifier in the background, serve predictions."""

__version__ = "0.1.0"
