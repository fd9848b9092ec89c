"""Experiment grids (variants x seeds) run with fairseq-train and fairseq-generate: the YAML
schema (grid), the runner (claims, resume, progress), the cascade decode, the report."""
