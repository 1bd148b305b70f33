"""Image folders (issue 22): image_folder's resident tensors, ImageFolderDataset's lazy reads and seeded
augmentation through DataLoaders with and without workers, and the errors, on files this test writes."""
import shutil
import sys

import numpy as np
import pytest
import torch

from turnpike.data import (IMAGE_EXTENSIONS, ImageFolderDataset, ImageFolderTensors, augment, batch_indices,
                           epoch_generator, image_folder, image_folder_datasets, image_folder_streams, normalise)

Image = pytest.importorskip("PIL.Image")

CLASSES = ("Apple", "mango", "zebra")         # sorted as Python sorts: capitals first


def _pixels(rng, height, width, channels=3):
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _write_class(folder, rng, count, offset=0):
    """``count`` images of assorted sizes, modes and formats in ``folder``, plus files to skip."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        kind = (i + offset) % 5
        height, width = 6 + (i % 3), 7 + 2 * (i % 2)
        if kind == 0:
            Image.fromarray(_pixels(rng, height, width)).save(folder / f"img{i:02d}.png")
        elif kind == 1:
            Image.fromarray(_pixels(rng, height, width, 1)).save(folder / f"img{i:02d}.PNG")
        elif kind == 2:
            Image.fromarray(_pixels(rng, height, width, 4)).save(folder / f"img{i:02d}.png")      # RGBA
        elif kind == 3:
            image = Image.fromarray(_pixels(rng, height, width)).convert("P")
            image.save(folder / f"img{i:02d}.png")
        else:
            Image.fromarray(_pixels(rng, height, width)).save(folder / f"img{i:02d}.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / ".hidden.png").write_bytes(b"not even a png")      # hidden: skipped, not decoded


def _tree(root, counts=(4, 3, 5), test_counts=(2, 2, 3), seed=0):
    """root/train/<class>/..., root/val/<class>/..., and a nested sub-folder in one class."""
    rng = np.random.default_rng(seed)
    for split, sizes in (("train", counts), ("val", test_counts)):
        for name, count in zip(CLASSES[::-1], sizes[::-1]):        # written out of order
            _write_class(root / split / name, rng, count, offset=len(name))
    nested = root / "train" / "mango" / "more"
    nested.mkdir()
    Image.fromarray(_pixels(rng, 9, 9)).save(nested / "deep.bmp")
    hidden = root / "train" / "mango" / ".ipynb_checkpoints"
    hidden.mkdir()
    (hidden / "broken.png").write_bytes(b"")                       # in a hidden folder: never read
    (root / "README.txt").write_text("top-level files are not classes")
    return root


def _expected(path, size, channels=3):
    """What image_folder should make of one file with fit="stretch": Pillow's own conversion and resize."""
    image = Image.open(path)
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image
    image = image.convert("RGB" if channels == 3 else "L").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image)
    return pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None]


def _files(folder):
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                  key=lambda p: (p.relative_to(folder).parts[0], p.relative_to(folder).as_posix()))


# --- image_folder -------------------------------------------------------------------------------

def test_image_folder_reads_classes_labels_and_pixels(tmp_path):
    root = _tree(tmp_path / "fruit")
    data = image_folder(root, size=(5, 6), fit="stretch")
    assert isinstance(data, ImageFolderTensors)
    assert data.classes == CLASSES and data.num_classes == 3 and data.channels == 3
    assert data.name == "fruit" and data.source == str(root)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert tuple(data.train_images.shape) == (4 + 4 + 5, 3, 5, 6)     # mango's nested deep.bmp counts
    assert tuple(data.test_images.shape) == (7, 3, 5, 6)
    assert data.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 5
    assert data.test_labels.tolist() == [0] * 2 + [1] * 2 + [2] * 3
    for split in ("train", "val"):
        files = _files(root / split)
        images = data.train_images if split == "train" else data.test_images
        assert len(files) == len(images)
        for file, image in zip(files, images):
            np.testing.assert_array_equal(image.numpy(), _expected(file, (5, 6)), err_msg=str(file))
    assert "ImageFolderTensors(" in repr(data) and "classes=[Apple, mango, zebra]" in repr(data)
    # the mean and std of the training images in [0, 1], per channel, as numpy computes them
    pixels = data.train_images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)


def test_modes_channels_and_fits(tmp_path):
    rng = np.random.default_rng(1)
    wide = _pixels(rng, 8, 16)
    grey = _pixels(rng, 8, 8, 1)
    rgba = _pixels(rng, 8, 8, 4)
    sixteen = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "b").mkdir(parents=True)
        Image.fromarray(wide).save(tmp_path / split / "a" / "wide.png")
        Image.fromarray(grey).save(tmp_path / split / "a" / "grey.png")
        Image.fromarray(rgba).save(tmp_path / split / "b" / "rgba.png")
        Image.fromarray(sixteen).save(tmp_path / split / "b" / "sixteen.png")        # mode I;16
    data = image_folder(tmp_path, size=8)                      # train/ + test/ found; crop fit by default
    grey_image, wide_image, rgba_image, sixteen_image = data.train_images.numpy()   # sorted by file name
    np.testing.assert_array_equal(wide_image, wide[:, 4:12].transpose(2, 0, 1))   # the centre 8 columns
    np.testing.assert_array_equal(grey_image, np.repeat(grey[None], 3, axis=0))     # grey -> equal channels
    np.testing.assert_array_equal(rgba_image, rgba[..., :3].transpose(2, 0, 1))     # alpha dropped
    np.testing.assert_array_equal(sixteen_image[0], (sixteen >> 8).astype(np.uint8))  # top 8 bits
    stretched = image_folder(tmp_path, size=(8, 16), fit="stretch")
    np.testing.assert_array_equal(stretched.train_images[1].numpy(), wide.transpose(2, 0, 1))
    single = image_folder(tmp_path, size=8, channels=1)
    assert single.channels == 1 and len(single.mean) == 1
    expected = np.asarray(Image.fromarray(wide[:, 4:12]).convert("L"))
    np.testing.assert_array_equal(single.train_images[1, 0].numpy(), expected)
    np.testing.assert_array_equal(single.train_images[0, 0].numpy(), grey)


def test_exif_orientation_is_applied(tmp_path):
    pixels = _pixels(np.random.default_rng(2), 4, 8)
    exif = Image.Exif()
    exif[0x0112] = 6                                            # stored sideways: rotate 90° clockwise
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(pixels).save(tmp_path / name / "x.png", exif=exif)
    item, _ = ImageFolderDataset(tmp_path, size=(8, 4), fit="stretch")[0]
    upright = np.asarray(Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(item.numpy(), upright.transpose(2, 0, 1))


def test_layouts_auto_explicit_and_fraction(tmp_path):
    root = _tree(tmp_path / "set")
    auto = image_folder(root, size=4)
    explicit = image_folder(root, size=4, split=("train", "val"))
    absolute = image_folder(root, size=4, split=(root / "train", str(root / "val")))
    for other in (explicit, absolute):
        assert torch.equal(auto.train_images, other.train_images) and torch.equal(auto.test_images, other.test_images)
    (root / "val").rename(root / "test")
    assert torch.equal(image_folder(root, size=4).test_images, auto.test_images)
    # one folder of classes, a fraction of each held out: deterministic for a seed, per class rounded
    fraction = image_folder(root / "train", size=4, split=0.3, seed=5)
    again = image_folder(root / "train", size=4, split=0.3, seed=5)
    assert torch.equal(fraction.train_images, again.train_images) and torch.equal(fraction.test_images,
                                                                                   again.test_images)
    assert fraction.test_labels.tolist() == [0, 1, 2, 2]        # round(0.3 * (4, 4, 5)) = 1, 1, 2
    assert len(fraction.train_labels) == 13 - 4
    assert fraction.name == "train"
    # every image on exactly one side, the same images as read whole
    whole = image_folder(root, size=4, split=("train", "test")).train_images
    both = torch.cat([fraction.train_images, fraction.test_images])
    assert sorted(map(bytes, both.numpy())) == sorted(map(bytes, whole.numpy()))


def test_fraction_split_follows_the_seed_and_is_stable_under_additions(tmp_path):
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray(_pixels(rng, 2, 2)).save(tmp_path / name / f"{i}.png")

    def held(seed, cls=0):
        _, test = image_folder_datasets(tmp_path, size=2, split=0.3, seed=seed)
        return {path.name for path, label in test.samples if label == cls}

    chosen = {seed: held(seed) for seed in range(4)}
    assert all(len(names) == 3 for names in chosen.values())
    assert len({frozenset(names) for names in chosen.values()}) > 1          # the seed matters
    before_b = held(0, cls=1)
    Image.fromarray(_pixels(rng, 2, 2)).save(tmp_path / "a" / "new.png")       # class a: 11 images, still 3 held
    assert len(held(0) ^ chosen[0]) <= 2                                        # at most one swapped in
    assert held(0, cls=1) == before_b                                           # other classes untouched


def test_subset_to_and_the_gpu_pipeline_functions(tmp_path):
    data = image_folder(_tree(tmp_path / "set"), size=8)
    small = data.subset(train=6, test=3, seed=1).to("cpu")
    assert isinstance(small, ImageFolderTensors) and small.classes == CLASSES
    assert len(small.train_labels) == 6 and len(small.test_labels) == 3
    generator = epoch_generator(0, 0)
    for index in batch_indices(len(small.train_labels), 4, seed=0, epoch=0):
        batch = normalise(augment(small.train_images[index], crop_padding=2, generator=generator),
                          small.mean, small.std)
        assert batch.dtype == torch.float32 and tuple(batch.shape[1:]) == (3, 8, 8)


# --- ImageFolderDataset -----------------------------------------------------------------------

def test_dataset_reads_what_image_folder_reads(tmp_path):
    root = _tree(tmp_path / "set")
    data = image_folder(root, size=(6, 5))
    dataset = ImageFolderDataset(root / "train", size=(6, 5))
    assert len(dataset) == len(data.train_labels) and dataset.classes == CLASSES and dataset.num_classes == 3
    assert dataset.targets == data.train_labels.tolist()
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.dtype == torch.uint8 and isinstance(label, int)
        assert torch.equal(image, data.train_images[index]) and label == int(data.train_labels[index])
    assert torch.equal(dataset[-1][0], dataset[len(dataset) - 1][0])
    with pytest.raises(IndexError, match="index: expected"):
        dataset[len(dataset)]
    mean, std = dataset.statistics(workers=2)
    np.testing.assert_allclose(mean, data.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, data.std, rtol=0, atol=1e-12)
    # the streamed split is the resident one, for layouts and fractions alike
    for split in (None, 0.4):
        where = root if split is None else root / "train"
        resident = image_folder(where, size=4, split=split, seed=2)
        train, test = image_folder_datasets(where, size=4, split=split, seed=2, augment=False)
        assert torch.equal(torch.stack([train[i][0] for i in range(len(train))]), resident.train_images)
        assert torch.equal(torch.stack([test[i][0] for i in range(len(test))]), resident.test_images)
        assert test.targets == resident.test_labels.tolist() and not test.augment


def test_streams_give_a_run_what_the_resident_tensors_give_it(tmp_path):
    # the members a training run reads (inputs, batches, sizes, statistics, subsets), streamed and resident
    root = _tree(tmp_path / "set")
    resident, streams = image_folder(root, size=(6, 5)), image_folder_streams(root, size=(6, 5), workers=0)
    assert (streams.mean, streams.std) == (resident.mean, resident.std)          # the same arithmetic, exact
    assert streams.num_classes == 3 and streams.channels == 3 and streams.image_size == resident.image_size
    for memory, files in ((resident, streams), (resident.subset(train=7, test=4, seed=5),
                                                streams.subset(train=7, test=4, seed=5))):
        assert (files.mean, files.std) == (memory.mean, memory.std)
        for split, workers in (("train", 0), ("test", 2)):
            assert files.split_size(split) == memory.split_size(split)
            read = list(files.batches(split, 3, workers=workers))
            held = list(memory.batches(split, 3))
            assert [len(labels) for _, labels in read] == [len(labels) for _, labels in held]
            assert torch.equal(torch.cat([i for i, _ in read]), torch.cat([i for i, _ in held]))
            assert torch.equal(torch.cat([lab for _, lab in read]), torch.cat([lab for _, lab in held]))
        dataset, labels = files.inputs("train")
        assert isinstance(dataset, ImageFolderDataset) and labels is None and not dataset.augment
    # the fingerprint follows the files, not where the folder lies
    moved = image_folder_streams(shutil.copytree(root, tmp_path / "moved" / "set"), size=(6, 5))
    assert moved.fingerprint() == streams.fingerprint() != streams.subset(train=7).fingerprint()
    (tmp_path / "moved" / "set" / "train" / "zebra" / "img00.png").rename(
        tmp_path / "moved" / "set" / "train" / "zebra" / "renamed.png")
    assert image_folder_streams(tmp_path / "moved" / "set", size=(6, 5)).fingerprint() != streams.fingerprint()
    with pytest.raises(ValueError, match="train: expected a subset size of at most 13"):
        streams.subset(train=14)


def _epochs(dataset, workers, epochs=(0, 1), persistent=False):
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False, num_workers=workers,
                                         persistent_workers=persistent)
    seen = []
    for epoch in epochs:
        dataset.set_epoch(epoch)
        seen.append([(images.clone(), labels.clone()) for images, labels in loader])
    return seen


def _same(first, second):
    return len(first) == len(second) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                              for a, b in zip(first, second))


def test_augmentation_is_the_same_for_any_workers_and_resumes(tmp_path):
    root = _tree(tmp_path / "set")
    dataset = ImageFolderDataset(root / "train", size=8, augment=True, seed=7)
    plain = _epochs(dataset, 0)
    assert _same(plain[0], _epochs(dataset, 2, epochs=(0,))[0])
    assert _same(plain[1], _epochs(dataset, 2, epochs=(1,))[0])
    persistent = _epochs(dataset, 2, persistent=True)              # set_epoch reaches persistent workers
    assert _same(plain[0], persistent[0]) and _same(plain[1], persistent[1])
    # a resumed run: a fresh dataset at epoch 1, read in another order, gives epoch 1's images
    resumed = ImageFolderDataset(root / "train", size=8, augment=True, seed=7)
    resumed.set_epoch(1)
    backwards = [resumed[i][0] for i in reversed(range(len(resumed)))][::-1]
    assert torch.equal(torch.stack(backwards), torch.cat([images for images, _ in plain[1]]))
    # epochs and seeds differ, and the augmentation changes the images
    assert not torch.equal(torch.cat([b[0] for b in plain[0]]), torch.cat([b[0] for b in plain[1]]))
    other_seed = ImageFolderDataset(root / "train", size=8, augment=True, seed=8)
    assert not _same(plain[0], _epochs(other_seed, 0, epochs=(0,))[0])
    unaugmented = ImageFolderDataset(root / "train", size=8)
    assert not torch.equal(torch.cat([b[0] for b in plain[0]]), torch.stack([x for x, _ in unaugmented]))
    assert torch.cat([b[1] for b in plain[0]]).tolist() == unaugmented.targets


def test_flip_only_augmentation_mirrors_whole_images(tmp_path):
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(_pixels(rng, 5, 5)).save(tmp_path / name / f"{i}.png")
    plain = ImageFolderDataset(tmp_path, size=5)
    flipped = ImageFolderDataset(tmp_path, size=5, augment=True, crop_scale=None)
    mirrored = 0
    for index in range(len(plain)):
        original, image = plain[index][0], flipped[index][0]
        assert torch.equal(image, original) or torch.equal(image, original.flip(2))
        mirrored += not torch.equal(image, original)
    assert 0 < mirrored < len(plain)
    no_flip = ImageFolderDataset(tmp_path, size=5, augment=True, crop_scale=None, flip=False)
    assert all(torch.equal(no_flip[i][0], plain[i][0]) for i in range(len(plain)))


# --- errors -------------------------------------------------------------------------------------

def _two_classes(root, count=2):
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(_pixels(rng, 4, 4)).save(root / name / f"{i}.png")
    return root


def test_missing_and_malformed_folders(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected an existing folder .* \(not found\)") as error:
        image_folder(tmp_path / "nowhere", size=4, split=0.5)
    assert str(tmp_path / "nowhere") in str(error.value)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a file, not a folder"):
        ImageFolderDataset(tmp_path / "file.png", size=4)
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.fromarray(_pixels(np.random.default_rng(0), 4, 4)).save(loose / "x.png")
    with pytest.raises(ValueError, match=r"loose: expected one sub-folder per class .* got no sub-folders "
                                         r"\(but 1 image file"):
        image_folder(loose, size=4, split=0.5)
    empty = _two_classes(tmp_path / "empty")
    (empty / "c").mkdir()
    with pytest.raises(ValueError, match=r"empty/c: expected image files .* in class folder 'c', got none$"):
        ImageFolderDataset(empty, size=4)
    (empty / "c" / "labels.txt").write_text("no images here")
    (empty / "c" / ".DS_Store").write_bytes(b"")
    with pytest.raises(ValueError, match=r"class folder 'c', got none \(skipped 2 other file\(s\): \.DS_Store, "
                                         r"labels\.txt\)"):
        image_folder(empty, size=4, split=0.5)
    one = tmp_path / "one"
    _two_classes(one)
    shutil.rmtree(one / "b")
    with pytest.raises(ValueError, match=r"one: expected at least 2 class sub-folders .* got 1 \('a'\)"):
        image_folder(one, size=4, split=0.5)


def test_corrupt_empty_and_truncated_images_are_named(tmp_path):
    cases = {"garbage.png": b"this is not a png file at all",
             "empty.jpg": b"",
             "truncated.jpg": None}
    for name, content in cases.items():
        root = _two_classes(tmp_path / name.split(".")[0])
        path = root / "b" / name
        if content is None:
            Image.fromarray(_pixels(np.random.default_rng(0), 32, 32)).save(path, quality=95)
            path.write_bytes(path.read_bytes()[:200])
        else:
            path.write_bytes(content)
        expected = "an empty file" if name == "empty.jpg" else "a corrupt or unsupported file"
        with pytest.raises(ValueError, match=rf"^{path}: expected an image file.* got {expected}"):
            image_folder(root, size=4, split=0.5, workers=2)
        dataset = ImageFolderDataset(root, size=4)                  # lazy: found only when read
        assert dataset[0][0].shape == (3, 4, 4)
        with pytest.raises(ValueError, match=rf"^{path}: expected an image file"):
            dataset[len(dataset) - 1]


def test_layout_errors(tmp_path):
    root = tmp_path / "set"
    for split in ("train", "val"):
        _two_classes(root / split)
    (root / "val" / "b").rename(root / "val" / "c")
    with pytest.raises(ValueError, match=r"val: expected the class folders of .*train \['a', 'b'\], got "
                                         r"\['a', 'c'\] \(missing: \['b'\]; extra: \['c'\]\)"):
        image_folder(root, size=4)
    with pytest.raises(ValueError, match=r"expected the class folders \['a', 'b'\] \(classes=\), got \['a', 'c'\]"):
        ImageFolderDataset(root / "val", size=4, classes=["a", "b"])
    (root / "val" / "c").rename(root / "val" / "b")
    _two_classes(root / "test")
    with pytest.raises(ValueError, match=r"split: expected .* got None for .*, which has train/ and val/, test/"):
        image_folder(root, size=4)
    with pytest.raises(ValueError, match=r"split: expected .* which has no train/ and val/"):
        image_folder(root / "train", size=4)
    with pytest.raises(ValueError, match=r"split\[1\]: expected an existing folder .*holdout' \(not found\)"):
        image_folder(root, size=4, split=("train", "holdout"))
    for bad in (0, 1.0, 1.5, True, "val", ("train",), ("train", 3)):
        with pytest.raises(ValueError, match=r"^split: expected"):
            image_folder(root, size=4, split=bad)
    with pytest.raises(ValueError, match=r"split: expected a fraction that holds out at least one image"):
        image_folder(root / "train", size=4, split=0.1)                 # round(0.1 * 2) = 0 per class


def test_argument_errors(tmp_path):
    root = _two_classes(tmp_path / "set")
    for size in (0, -3, (4, 0), (4,), 2.5, True, "8", None):
        with pytest.raises(ValueError, match=r"^size: expected a positive integer or a pair"):
            image_folder(root, size=size, split=0.5)
        with pytest.raises(ValueError, match=r"^size: expected a positive integer or a pair"):
            ImageFolderDataset(root, size=size)
    with pytest.raises(ValueError, match=r"^channels: expected one of \[1, 3\], got 2"):
        image_folder(root, size=4, split=0.5, channels=2)
    with pytest.raises(ValueError, match=r"^fit: expected one of \['crop', 'stretch'\], got 'pad'"):
        ImageFolderDataset(root, size=4, fit="pad")
    with pytest.raises(ValueError, match=r"^seed: expected an integer >= 0, got -1"):
        image_folder(root, size=4, split=0.5, seed=-1)
    with pytest.raises(ValueError, match=r"^workers: expected an integer >= 1, got 0"):
        image_folder(root, size=4, split=0.5, workers=0)
    with pytest.raises(ValueError, match=r"^path: expected a folder path"):
        ImageFolderDataset(3, size=4)
    for scale in ((0.5, 0.2), (0, 1), (0.5, 1.5), 0.5):
        with pytest.raises(ValueError, match=r"^crop_scale(\[\d\])?: expected"):
            ImageFolderDataset(root, size=4, augment=True, crop_scale=scale)
    with pytest.raises(ValueError, match=r"^crop_ratio(\[\d\])?: expected"):
        ImageFolderDataset(root, size=4, augment=True, crop_ratio=(2, 1))
    with pytest.raises(ValueError, match=r"^augment: expected True or False"):
        image_folder_datasets(root, size=4, split=0.5, augment="yes")
    dataset = ImageFolderDataset(root, size=4)
    with pytest.raises(ValueError, match=r"^epoch: expected an integer >= 0, got -1"):
        dataset.set_epoch(-1)
    with pytest.raises(ValueError, match=r"^index: expected an integer"):
        dataset["0"]


def test_without_pillow_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    root = _two_classes(tmp_path / "set")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install pillow"):
        image_folder(root, size=4, split=0.5)
    with pytest.raises(ImportError, match=r"pip install pillow"):
        ImageFolderDataset(root, size=4)
