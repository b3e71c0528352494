"""Batched environments (Gymnasium-shaped: arrays in, arrays out) and what they offer."""
