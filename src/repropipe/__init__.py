"""repropipe: one reproducible research pipeline driven by DVC and Snakemake alike."""

__version__ = "0.1.0"
