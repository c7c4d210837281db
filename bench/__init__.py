"""Benchmarks for nurture_mail: `python -m bench` prints a table of figures and writes JSON."""
