"""procmem: experiments with agents that build procedural memory."""

__version__ = "0.1.0"
