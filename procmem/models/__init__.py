"""Torch modules: actor-critic networks, the environment model, imagination, skill policies."""
