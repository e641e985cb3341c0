"""Benchmarks of shimnn against torch (and scikit-learn): speed ratios, memory, the seed
experiment. Run from the repository root: ``.venv/bin/python -m bench.ratios`` (see
``bench/README.md``)."""
