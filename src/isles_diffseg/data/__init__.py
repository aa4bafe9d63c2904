"""ISLES'24 data: discovery, reading, windows, orientation, slicing, slice store, folds, synthetic data."""
