"""Scripts that measure the shipped engine (robustres, imported as installed); run them from the
repository root as `python -m benchmarks.<name>`. Prototypes live in research/."""
