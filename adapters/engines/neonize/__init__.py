"""The neonize (whatsmeow) engine. neonize itself is imported on first use only."""

from adapters.engines.neonize.engine import NeonizeEngine

__all__ = ["NeonizeEngine"]
