"""Data sets: generated two spirals; MNIST and Fashion-MNIST from IDX files or shipped subsets."""
from ._idx import load_idx_split, read_idx, write_idx
from ._images import DATASETS, ImageDataset, load_images
from ._spirals import two_spirals

__all__ = ["DATASETS", "ImageDataset", "load_idx_split", "load_images", "read_idx", "two_spirals", "write_idx"]
