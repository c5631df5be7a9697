"""Video data: decoding, sampling, transforms, annotations, splits, datasets, preparers and synthetic data."""
