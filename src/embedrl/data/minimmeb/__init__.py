"""MiniMMEB: the embedded, seeded synthetic data set in the real MMEB-V2 / UVRB formats."""

from embedrl.data.minimmeb.generate import SIZE_PRESETS, GenerationSummary, generate

__all__ = ["SIZE_PRESETS", "GenerationSummary", "generate"]
