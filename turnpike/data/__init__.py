"""Data sets: generated two spirals; MNIST and Fashion-MNIST from IDX files or shipped subsets;
CIFAR-10/100 from their python batches; every image set as 32×32 uint8 tensors for the conv nets,
with batched GPU-side normalisation, augmentation and per-epoch batch order; whitened principal
components with one-hot targets (the Demystifying-ResNet set-up)."""
from ._augment import (augment, batch_indices, epoch_generator, normalise, random_crop, random_flip,
                       random_resized_crop)
from ._cifar import IMAGE_DATASETS, ImageTensors, channel_statistics, load_image_tensors, read_cifar
from ._folder import (IMAGE_EXTENSIONS, ImageFolderDataset, ImageFolderStreams, ImageFolderTensors, image_folder,
                      image_folder_datasets, image_folder_streams)
from ._idx import load_idx_split, read_idx, write_idx
from ._images import DATASETS, ImageDataset, load_images, load_raw_images
from ._spirals import two_spirals
from ._streams import SupportsEpoch, SupportsUnaugmented
from ._whiten import WhiteningTransform, whitened_regression_data, whitening

__all__ = ["DATASETS", "IMAGE_DATASETS", "ImageDataset", "ImageTensors", "augment", "batch_indices",
           "channel_statistics", "epoch_generator", "load_idx_split", "load_image_tensors", "load_images",
           "load_raw_images", "normalise", "random_crop", "random_flip", "random_resized_crop", "read_cifar", "read_idx",
           "two_spirals", "WhiteningTransform", "whitened_regression_data", "whitening", "write_idx"]
__all__ += ["IMAGE_EXTENSIONS", "ImageFolderDataset", "ImageFolderStreams", "ImageFolderTensors", "image_folder",
            "image_folder_datasets", "image_folder_streams"]
__all__ += ["SupportsEpoch", "SupportsUnaugmented"]
