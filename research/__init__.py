"""Prototypes and models of the GPU step: a Triton block (fused_block), earlier or hypothetical
engine pieces (variants), the bytes a step moves (bytes), the least each kernel design could move
(floor), and where a step's device time goes (profile_step). The library `robustres` never imports
them. Run them from the repository root as `python -m research.<name>`, and their tests with
`make research-test` (they are not part of `make test`)."""
