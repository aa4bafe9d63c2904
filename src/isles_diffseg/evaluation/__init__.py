"""Evaluation of a trained run: native-grid predictions, ISLES'24 metrics, baselines and reports."""
