"""Evaluation: test sets, measures, published runs, comparisons and reports."""
