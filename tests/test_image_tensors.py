"""CIFAR pickle batches, ImageTensors, and batched augmentation / batch order for GPU-resident data."""
import os
import pickle

import numpy as np
import pytest
import torch

from turnpike.data import (IMAGE_DATASETS, ImageTensors, augment, batch_indices, channel_statistics,
                           epoch_generator, load_image_tensors, load_images, load_raw_images, normalise,
                           random_crop, random_flip, random_resized_crop, read_cifar, write_idx)
from turnpike.data._augment import _crop_at, _random_boxes, _resized

NO_DOWNLOAD = "CIFAR cannot be fetched here; available here: --dataset mnist (the embedded 5,000-image subset, always)"


# --- tiny CIFAR batches in the official format -------------------------------------------------

def _batch(rng, count, label_key, num_classes):
    """One batch dict as the official archives hold it (bytes keys, labels as a list of ints)."""
    batch = {b"batch_label": b"tiny batch", b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             label_key: rng.integers(0, num_classes, count).tolist(),
             b"filenames": [b"img_%d.png" % i for i in range(count)]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in batch[label_key]]
    return batch


def _write(path, batch, protocol=2):
    with open(path, "wb") as stream:
        pickle.dump(batch, stream, protocol=protocol)


def _cifar10(root, protocol=2, counts=(3, 2, 4, 3, 2, 5)):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name, count in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], counts):
        batches[name] = _batch(rng, count, b"labels", 10)
        _write(folder / name, batches[name], protocol)
    return folder, batches


def _cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {"train": _batch(rng, 7, b"fine_labels", 100), "test": _batch(rng, 4, b"fine_labels", 100)}
    batches["train"][b"fine_labels"][0] = 99                     # the top label is valid
    for name, batch in batches.items():
        _write(folder / name, batch)
    return folder, batches


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_loads_from_either_directory(tmp_path, protocol, nested):
    folder, batches = _cifar10(tmp_path, protocol)
    data = load_image_tensors("cifar10", tmp_path if nested else folder)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert data.train_images.shape == (14, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (5, 3, 32, 32) and data.test_labels.dtype == torch.int64
    assert data.num_classes == 10 and data.source == str(folder) and data.channels == 3
    rows = np.concatenate([b[b"data"] for b in train])
    np.testing.assert_array_equal(data.train_labels.numpy(), sum((b[b"labels"] for b in train), []))
    np.testing.assert_array_equal(data.test_labels.numpy(), batches["test_batch"][b"labels"])
    # a row holds the red, green, blue planes, each 32 rows of 32 pixels
    image, channel, row, col = 5, 2, 7, 30
    assert data.train_images[image, channel, row, col] == rows[image, channel * 1024 + row * 32 + col]
    np.testing.assert_array_equal(data.train_images.numpy(), rows.reshape(14, 3, 32, 32))
    np.testing.assert_array_equal(data.test_images.numpy().reshape(5, -1), batches["test_batch"][b"data"])
    expected = rows.reshape(14, 3, 32, 32) / 255.0
    np.testing.assert_allclose(data.mean, expected.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(data.std, expected.std(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("nested", [True, False])
def test_cifar100_loads_fine_labels(tmp_path, nested):
    folder, batches = _cifar100(tmp_path)
    data = load_image_tensors("cifar100", tmp_path if nested else folder)
    assert data.num_classes == 100 and data.train_images.shape == (7, 3, 32, 32)
    np.testing.assert_array_equal(data.train_labels.numpy(), batches["train"][b"fine_labels"])
    np.testing.assert_array_equal(data.test_labels.numpy(), batches["test"][b"fine_labels"])
    np.testing.assert_array_equal(data.test_images.numpy().reshape(4, -1), batches["test"][b"data"])
    (train_x, train_y), _, source = read_cifar("cifar100", folder)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64 and source == str(folder)


class _Shell:
    """Unpickles to os.getcwd(): a harmless stand-in for a pickle that would run code."""
    def __reduce__(self):
        return os.getcwd, ()


def _replace(path, make):
    raw = path.read_bytes()
    batch = pickle.loads(raw)
    result = make(raw, batch)
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        _write(path, result)


@pytest.mark.parametrize("make, message", [
    (lambda raw, b: raw[: len(raw) // 2], "could not unpickle"),
    (lambda raw, b: b"\x93NUMPY garbage, not a pickle" * 3, "could not unpickle"),
    (lambda raw, b: [b[b"data"]], "expected a pickled dict"),
    (lambda raw, b: {b"data": b[b"data"], b"fine_labels": b[b"labels"]}, "keys b'data' and b'labels'"),
    (lambda raw, b: {**b, b"data": b[b"data"][:, :3000]}, r"shape \(count, 3072\)"),
    (lambda raw, b: {**b, b"data": b[b"data"].astype(np.int16)}, "uint8"),
    (lambda raw, b: {**b, b"labels": [0] * (len(b[b"labels"]) - 1) + [10]}, r"in 0\.\.9"),
    (lambda raw, b: {**b, b"labels": [-1] + b[b"labels"][1:]}, r"in 0\.\.9"),
    (lambda raw, b: {**b, b"labels": [0.5] * len(b[b"labels"])}, "integer labels"),
    (lambda raw, b: {**b, b"labels": b[b"labels"] + [1]}, "expected 4 labels"),
    (lambda raw, b: {**b, b"data": _Shell()}, "refusing the global posix.getcwd|refusing the global nt.getcwd"),
], ids=["truncated", "garbage", "not-a-dict", "wrong-keys", "wrong-shape", "wrong-dtype", "label-too-big",
        "label-negative", "float-labels", "count-mismatch", "foreign-global"])
def test_corrupt_cifar_batches_are_refused_naming_the_file(tmp_path, make, message):
    folder, _ = _cifar10(tmp_path)
    _replace(folder / "data_batch_3", make)
    with pytest.raises(ValueError, match=message) as error:
        load_image_tensors("cifar10", tmp_path)
    assert str(folder / "data_batch_3") in str(error.value)


def test_missing_cifar_files_name_what_is_expected(tmp_path):
    folder, _ = _cifar10(tmp_path)
    (folder / "test_batch").unlink()
    (folder / "data_batch_2").unlink()
    with pytest.raises(ValueError) as error:
        load_image_tensors("cifar10", tmp_path)
    text = str(error.value)
    assert "data_batch_2, test_batch missing" in text and "data_batch_1, data_batch_2" in text
    assert NO_DOWNLOAD in text
    for where in (None, tmp_path / "absent", tmp_path / "empty"):
        if where is not None and where.name == "empty":
            where.mkdir()
        with pytest.raises(ValueError, match="cifar-100-python") as error:
            load_image_tensors("cifar100", where)
        assert NO_DOWNLOAD in str(error.value)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="dataset") as error:
        load_image_tensors("imagenet")
    assert all(name in str(error.value) for name in IMAGE_DATASETS)
    with pytest.raises(ValueError, match="cifar10"):
        read_cifar("cifar-10", ".")


# --- MNIST-like sets, padded to 32x32 ----------------------------------------------------------

def _assert_padded_copy(images, raw):
    assert images.shape == (len(raw), 1, 32, 32) and images.dtype == torch.uint8
    border = images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.count_nonzero()) == 0
    np.testing.assert_array_equal(images[:, 0, 2:30, 2:30].numpy(), raw)


def test_mnist_subset_is_padded_to_32(tmp_path):
    data = load_image_tensors("mnist")
    (train_x, train_y), (test_x, test_y), _ = load_raw_images("mnist")
    assert train_x.shape == (4000, 28, 28) and data.channels == 1 and data.num_classes == 10
    _assert_padded_copy(data.train_images, train_x)
    _assert_padded_copy(data.test_images, test_x)
    np.testing.assert_array_equal(data.train_labels.numpy(), train_y)
    # the centre is the pixels the flat-vector loader normalises
    flat = load_images("mnist")
    pixels = flat.train_inputs * flat.pixel_std + flat.pixel_mean
    np.testing.assert_allclose(data.train_images[:, 0, 2:30, 2:30].reshape(4000, -1).numpy() / 255.0, pixels,
                               atol=1e-5)
    np.testing.assert_array_equal(data.test_labels.numpy(), flat.test_labels)


def test_fashion_mnist_from_idx_files_is_padded(tmp_path):
    rng = np.random.default_rng(2)
    images = {split: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for split, n in (("train", 12), ("t10k", 5))}
    for split, array in images.items():
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", array)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", (np.arange(len(array)) % 10).astype(np.uint8))
    data = load_image_tensors("fashion-mnist", tmp_path)
    _assert_padded_copy(data.train_images, images["train"])
    _assert_padded_copy(data.test_images, images["t10k"])
    padded = np.pad(images["train"], ((0, 0), (2, 2), (2, 2))) / 255.0
    np.testing.assert_allclose(data.mean, [padded.mean()], rtol=1e-12)
    np.testing.assert_allclose(data.std, [padded.std()], rtol=1e-12)


# --- ImageTensors -------------------------------------------------------------------------------

def _indexed(train=300, test=90, classes=(0.5, 0.3, 0.2)):
    """Images whose first two pixels spell their index, with imbalanced class proportions."""
    def split(count):
        index = np.arange(count)
        images = np.zeros((count, 3, 32, 32), np.uint8)
        images[:, 0, 0, 0], images[:, 0, 0, 1] = index % 256, index // 256
        images[:, 1:] = np.random.default_rng(count).integers(0, 256, (count, 2, 32, 32))
        labels = np.repeat(np.arange(len(classes)), (np.array(classes) * count).astype(int))
        return torch.from_numpy(images), torch.from_numpy(labels)
    (a, b), (c, d) = split(train), split(test)
    mean, std = channel_statistics(a)
    return ImageTensors("indexed", a, b, c, d, len(classes), mean, std, "test")


def _indices(images):
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).numpy()


def test_subset_is_stratified_reproducible_and_restated():
    data = _indexed()
    small = data.subset(train=100, test=30, seed=3)
    assert len(small.train_labels) == 100 and len(small.test_labels) == 30
    assert np.bincount(small.train_labels.numpy()).tolist() == [50, 30, 20]
    assert np.bincount(small.test_labels.numpy()).tolist() == [15, 9, 6]
    for split in ("train", "test"):
        chosen = _indices(getattr(small, f"{split}_images"))
        assert len(set(chosen.tolist())) == len(chosen)                       # no repeats
        np.testing.assert_array_equal(getattr(small, f"{split}_labels").numpy(),
                                      getattr(data, f"{split}_labels").numpy()[chosen])
    assert np.bincount(small.train_labels[:10].numpy()).tolist() == [5, 3, 2]  # a prefix is stratified too
    again = data.subset(train=100, test=30, seed=3)
    assert torch.equal(again.train_images, small.train_images) and torch.equal(again.test_labels, small.test_labels)
    other = data.subset(train=100, test=30, seed=4)
    assert not np.array_equal(_indices(other.train_images), _indices(small.train_images))
    assert small.mean == channel_statistics(small.train_images)[0] and small.mean != data.mean
    only_test = data.subset(test=10)
    assert only_test.train_images is data.train_images and only_test.mean == data.mean
    with pytest.raises(ValueError, match="train: expected a subset size of at most 300"):
        data.subset(train=301)
    with pytest.raises(ValueError, match="test"):
        data.subset(test=0)


def test_to_repr_and_checks():
    data = _indexed()
    moved = data.to("cpu")
    assert moved is not data and moved.device == torch.device("cpu") and torch.equal(moved.test_images,
                                                                                        data.test_images)
    text = repr(data)
    assert "'indexed'" in text and "train=300" in text and "test=90" in text and "3x32x32" in text
    with pytest.raises(AttributeError):
        data.name = "other"
    with pytest.raises(ValueError, match="train_labels"):
        ImageTensors("x", data.train_images, data.train_labels[:-1], data.test_images, data.test_labels, 3,
                     data.mean, data.std, "")
    with pytest.raises(ValueError, match="device"):
        data.to("tpu")


def test_channel_statistics_are_exact():
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (50, 2, 8, 8), dtype=np.uint8))
    mean, std = channel_statistics(images)
    reference = images.numpy() / 255.0
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(std, reference.std(axis=(0, 2, 3)), rtol=1e-13)


# --- normalise, crop, flip ----------------------------------------------------------------------

def test_normalise_gives_zero_mean_unit_std_on_the_training_set():
    data = _indexed()
    images = normalise(data.train_images, data.mean, data.std)
    assert images.dtype == torch.float32 and images.shape == data.train_images.shape
    np.testing.assert_allclose(images.double().mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(images.double().std(dim=(0, 2, 3), correction=0).numpy(), 1, atol=1e-5)
    pixel = (float(data.train_images[7, 2, 3, 4]) / 255 - data.mean[2]) / data.std[2]
    assert float(normalise(data.train_images[7:8], data.mean, data.std, torch.float64)[0, 2, 3, 4]) \
        == pytest.approx(pixel, rel=1e-12)
    mnist = load_image_tensors("mnist")
    digits = normalise(mnist.train_images, mnist.mean, mnist.std, torch.float64)
    assert abs(float(digits.mean())) < 1e-9 and abs(float(digits.std(correction=0)) - 1) < 1e-9
    with pytest.raises(ValueError, match="uint8"):
        normalise(images, data.mean, data.std)
    with pytest.raises(ValueError, match="mean: expected 3 per-channel values"):
        normalise(data.train_images, data.mean[:1], data.std)
    with pytest.raises(ValueError, match="std"):
        normalise(data.train_images, data.mean, (1.0, 0.0, 1.0))


def _random_images(count, channels=3, height=9, width=7, seed=0, dtype=torch.uint8):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (count, channels, height, width), generator=generator).to(dtype)


def _reference_crop(images, offsets, padding):
    """The per-sample definition: pad with zeros, slice."""
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h, w = images.shape[2:]
    return np.stack([padded[b, :, dy:dy + h, dx:dx + w] for b, (dy, dx) in enumerate(offsets.tolist())])


@pytest.mark.parametrize("padding", [0, 1, 4])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_at_matches_the_per_sample_reference(padding, dtype):
    images = _random_images(40, dtype=dtype)
    offsets = torch.randint(0, 2 * padding + 1, (40, 2), generator=torch.Generator().manual_seed(1))
    cropped = _crop_at(images, offsets, padding)
    assert cropped.dtype == dtype and cropped.shape == images.shape and cropped.is_contiguous()
    np.testing.assert_array_equal(cropped.numpy(), _reference_crop(images, offsets, padding))
    centre = torch.full((40, 2), padding)
    assert torch.equal(_crop_at(images, centre, padding), images)             # offset (p, p) is the identity
    if padding:
        # offset (p+1, p-1): content moves up one row and right one column, zeros come in
        shifted = _crop_at(images, centre + torch.tensor([1, -1]), padding)
        assert torch.equal(shifted[:, :, :-1, 1:], images[:, :, 1:, :-1])
        assert int(shifted[:, :, -1, :].count_nonzero()) == 0 and int(shifted[:, :, :, 0].count_nonzero()) == 0


def test_random_crop_is_a_per_sample_crop_with_every_offset():
    padding, images = 2, _random_images(400, channels=2)
    cropped = random_crop(images, padding, torch.Generator().manual_seed(0))
    found = []
    for b in range(len(images)):   # recover each sample's offset by trying all of them
        matches = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                   if np.array_equal(cropped[b].numpy(), _reference_crop(images[b:b + 1],
                                                                         torch.tensor([[dy, dx]]), padding)[0])]
        assert len(matches) == 1
        found.append(matches[0])
    counts = np.bincount([dy * 5 + dx for dy, dx in found], minlength=25)
    assert counts.min() >= 4                                                  # all 25 offsets, ~16 each
    repeat = random_crop(images, padding, torch.Generator().manual_seed(0))
    assert torch.equal(repeat, cropped)
    assert not torch.equal(random_crop(images, padding, torch.Generator().manual_seed(1)), cropped)


def test_random_flip_mirrors_about_half_the_samples():
    images = _random_images(4000, channels=1, height=2, width=3)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    distinct = ~(images == images.flip(3)).flatten(1).all(1)                  # samples a flip changes
    rate = float(mirrored[distinct].float().mean())
    assert 0.46 < rate < 0.54
    assert torch.equal(random_flip(images, torch.Generator().manual_seed(0)), flipped)


def test_random_resized_crop_is_interpolate_of_each_cut_out_box():
    # independent reference: cut each box out and resize it with F.interpolate (torchvision's resized_crop
    # without antialiasing), for uint8 and float images of a non-square size
    images = _random_images(200, channels=3, height=16, width=12)
    boxes = _random_boxes(200, 16, 12, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(1), "cpu")
    fractions = (boxes[:, 2] * boxes[:, 3]).double() / (16 * 12)
    aspects = boxes[:, 3].double() / boxes[:, 2]
    assert fractions.min() >= 0.08 - 0.05 and fractions.max() <= 1.0 and fractions.std() > 0.2   # sides rounded
    assert aspects.min() >= 0.75 * 0.85 and aspects.max() <= 4 / 3 / 0.85
    assert bool(((boxes[:, 0] + boxes[:, 2] <= 16) & (boxes[:, 1] + boxes[:, 3] <= 12) & (boxes >= 0).all(1)).all())
    reference = torch.cat([torch.nn.functional.interpolate(images[b:b + 1, :, t:t + h, l:l + w].float(), (16, 12),
                                                           mode="bilinear", align_corners=False)
                           for b, (t, l, h, w) in enumerate(boxes.tolist())])
    torch.testing.assert_close(_resized(images.float(), boxes), reference, atol=1e-3, rtol=0)
    rounded = _resized(images, boxes)                    # uint8: rounded (ties at .5 may go either way)
    assert rounded.dtype == torch.uint8 and float((rounded.float() - reference).abs().max()) <= 0.5 + 1e-3
    # the whole image at its own aspect is the identity; a seed reproduces the crops, another changes them
    assert torch.equal(random_resized_crop(images, (1.0, 1.0), (0.75, 0.75)), images)
    first = random_resized_crop(images, generator=epoch_generator(5, 0))
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(random_resized_crop(images, generator=epoch_generator(5, 0)), first)
    assert not torch.equal(random_resized_crop(images, generator=epoch_generator(5, 1)), first)
    for bad, name in (((0.5,), "scale"), ((0.9, 0.1), "scale"), ((0.0, 1.0), "scale"), ((0.5, 2.0), "scale")):
        with pytest.raises(ValueError, match=name):
            random_resized_crop(images, bad)
    with pytest.raises(ValueError, match="ratio"):
        random_resized_crop(images, ratio=(2.0, 1.0))


def test_augment_is_reproducible_from_a_seed():
    images = _random_images(64, height=32, width=32)
    first = augment(images, generator=epoch_generator(7, 2))
    assert first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(augment(images, generator=epoch_generator(7, 2)), first)
    assert not torch.equal(augment(images, generator=epoch_generator(7, 3)), first)
    assert not torch.equal(first, images)
    # without crop and flip nothing changes; with flip only, each sample is itself or its mirror
    assert torch.equal(augment(images, crop_padding=0, flip=False), images)
    only_flip = augment(images, crop_padding=0, generator=epoch_generator(0, 0))
    assert bool(((only_flip == images) | (only_flip == images.flip(3))).flatten(1).all(1).all())
    with pytest.raises(ValueError, match="generator"):
        augment(images, generator=7)
    with pytest.raises(ValueError, match="images"):
        augment(images[0])


# --- batch order --------------------------------------------------------------------------------

def test_batch_indices_are_a_reproducible_per_epoch_permutation():
    batches = batch_indices(103, 10, seed=5, epoch=0)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert all(b.dtype == torch.int64 and b.device == torch.device("cpu") for b in batches)
    order = torch.cat(batches)
    assert sorted(order.tolist()) == list(range(103))
    assert torch.equal(torch.cat(batch_indices(103, 10, seed=5, epoch=0)), order)      # a resumed run
    assert not torch.equal(torch.cat(batch_indices(103, 10, seed=5, epoch=1)), order)
    assert not torch.equal(torch.cat(batch_indices(103, 10, seed=6, epoch=0)), order)
    dropped = batch_indices(103, 10, seed=5, epoch=0, drop_last=True)
    assert len(dropped) == 10 and torch.equal(torch.cat(dropped), order[:100])


@pytest.mark.parametrize("count", [100, 103])
def test_ranks_get_disjoint_equal_shares(count):
    world = 4
    whole = torch.cat(batch_indices(count, count, seed=1, epoch=3))
    shares = [torch.cat(batch_indices(count, 8, seed=1, epoch=3, rank=r, world_size=world)) for r in range(world)]
    assert all(len(share) == count // world for share in shares)
    union = torch.cat(shares).tolist()
    assert len(set(union)) == len(union)                                       # disjoint
    kept = whole[: count // world * world]                                     # the tail is dropped
    assert sorted(union) == sorted(kept.tolist())
    if count % world == 0:
        assert sorted(union) == list(range(count))                            # covering
    for r, share in enumerate(shares):
        assert torch.equal(share, kept[r::world])
    counts = {len(batch_indices(count, 8, seed=1, epoch=3, rank=r, world_size=world)) for r in range(world)}
    assert counts == {4}                                                       # same number of steps


def test_batch_indices_refuse_bad_arguments():
    with pytest.raises(ValueError, match="rank: expected a rank in 0..3"):
        batch_indices(10, 2, seed=0, epoch=0, rank=4, world_size=4)
    with pytest.raises(ValueError, match="batch_size: expected at most 5"):
        batch_indices(10, 6, seed=0, epoch=0, world_size=2, drop_last=True)
    with pytest.raises(ValueError, match="count"):
        batch_indices(3, 1, seed=0, epoch=0, world_size=4)
    with pytest.raises(ValueError, match="epoch"):
        batch_indices(3, 1, seed=0, epoch=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_same_code_runs_on_cuda():
    images = _random_images(256, height=32, width=32).cuda()
    generator = epoch_generator(3, 1, "cuda")
    cropped = random_crop(images, 4, generator)
    assert cropped.device == images.device
    offsets = torch.randint(0, 9, (256, 2), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(_crop_at(images, offsets.cuda(), 4).cpu().numpy(),
                                  _reference_crop(images.cpu(), offsets, 4))
    assert torch.equal(augment(images, generator=epoch_generator(3, 1, "cuda")),
                       augment(images, generator=epoch_generator(3, 1, "cuda")))
    with pytest.raises(ValueError, match="generator: expected a torch.Generator on the images' device"):
        random_flip(images, torch.Generator())
    boxes = _random_boxes(256, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0), "cpu")
    torch.testing.assert_close(_resized(images.float(), boxes.cuda()).cpu(), _resized(images.cpu().float(), boxes),
                               atol=1e-3, rtol=0)
    assert random_resized_crop(images, generator=epoch_generator(3, 1, "cuda")).is_cuda
    data = _indexed().to("cuda")
    small = data.subset(train=30, seed=1)
    assert small.train_images.is_cuda and small.mean == channel_statistics(small.train_images.cpu())[0]
    assert torch.equal(small.train_labels.cpu(), _indexed().subset(train=30, seed=1).train_labels)
    normalised = normalise(data.train_images, data.mean, data.std)
    assert normalised.is_cuda and abs(float(normalised.mean())) < 1e-4
    cpu_order = torch.cat(batch_indices(50, 7, seed=2, epoch=4))
    gpu_batches = batch_indices(50, 7, seed=2, epoch=4, device="cuda")
    assert gpu_batches[0].is_cuda and torch.equal(torch.cat(gpu_batches).cpu(), cpu_order)


def test_missing_data_suggests_what_this_machine_has(tmp_path, monkeypatch):
    """The embedded MNIST always; Fashion-MNIST where it is found, else the command that installs it."""
    from turnpike.data import _images

    monkeypatch.setattr(_images, "FASHION_MNIST_DIR", tmp_path / "fashion")
    with pytest.raises(ValueError) as error:
        load_image_tensors("cifar10", None)
    assert "--dataset mnist (the embedded" in str(error.value)
    assert "after `apt-get install dataset-fashion-mnist`" in str(error.value)
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        load_image_tensors("fashion-mnist", None)
    (tmp_path / "fashion").mkdir()
    (tmp_path / "fashion" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ValueError) as error:
        load_image_tensors("cifar10", None)
    assert f"--dataset fashion-mnist (found in {tmp_path / 'fashion'})" in str(error.value)
