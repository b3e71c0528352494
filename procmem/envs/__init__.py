"""Batched environments (Gymnasium vector envs: arrays in, arrays out) and what they offer.
Importing this package registers them with Gymnasium (see :mod:`procmem.envs.registration`)."""

from procmem.envs.registration import register_envs

register_envs()
