"""Procedural memory: the skill library, its vector index, merging and eviction, and the
explorers, features and segment extraction the skill-library agent builds skills with."""
