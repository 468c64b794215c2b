"""The ML core: backbones, images, data, features, training, metrics, checkpoints, prediction.

Nothing in here reads settings, the database or HTTP; callers pass small typed arguments.
"""
