"""Issue 22: a torch Dataset read batch by batch through a DataLoader trains exactly as the same
images held in memory, with workers, after a resume, and in a process group; bad datasets get
clear errors."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import turnpike as tp
from turnpike.backends import make_backend
from turnpike.data import ImageFolderDataset, SupportsEpoch, SupportsUnaugmented

from test_distributed import run_ranks
from test_module_backend import CLASSES, SOLVE, tiny_data, tiny_net, tiny_ocp


class Pairs(torch.utils.data.Dataset):
    """The competent user's Dataset over tensors: (image, int label) items."""

    def __init__(self, images, labels):
        self.images, self.labels = torch.as_tensor(images), np.asarray(labels)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


def streamed_ocp(net, gamma=0.1, decay=1e-4, dataset=None):
    """tiny_ocp's problem with its images given as a Dataset."""
    resident = tiny_ocp(net, gamma, decay)
    dataset = Pairs(resident.inputs, resident.labels) if dataset is None else dataset
    return tp.OCP(net, dataset, None, stage_cost=resident.stage_cost, terminal_cost=resident.terminal_cost)


def _crop(images, generator):
    return tp.data.augment(images, crop_padding=1, generator=generator)


def _same_network(first, second):
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def _test_split():
    images, labels = tiny_data(24, seed=5)
    return images, labels


@pytest.mark.parametrize("exits, gamma, workers, augment", [("ws", 0.1, 0, False), ("full", 0.1, 2, True),
                                                            ("standard", 0.0, 0, True)])
def test_a_dataset_trains_exactly_as_the_same_images_in_memory(exits, gamma, workers, augment):
    """Batches, crops, BatchNorm statistics, weights, objectives and the per-exit test metrics: equal."""
    settings = dict(SOLVE, steps=7, augment=_crop if augment else None)
    images, labels = _test_split()
    resident = tp.solve_ocp(tiny_ocp(tiny_net(exits), gamma), test_data=(images, labels), **settings)
    streamed = tp.solve_ocp(streamed_ocp(tiny_net(exits), gamma), test_data=Pairs(images, labels),
                            loader_workers=workers, **settings)
    _same_network(resident.network, streamed.network)
    np.testing.assert_array_equal(resident.history["objective"], streamed.history["objective"])
    for key, values in resident.exit_metrics.items():
        np.testing.assert_array_equal(values, streamed.exit_metrics[key], err_msg=key)
    assert resident.history["objective"][-1] < resident.history["objective"][0]     # it trained


def test_a_streamed_run_resumes_in_mid_epoch_exactly(tmp_path):
    """Stopped at step 4 of a 3-batch epoch (inside epoch 1), resumed: the uninterrupted run's network."""
    settings = dict(SOLVE, steps=8, augment=_crop, loader_workers=2)
    full = tp.solve_ocp(streamed_ocp(tiny_net("ws")), **settings)
    path = tmp_path / "checkpoint.pt"
    stopped = tp.solve_ocp(streamed_ocp(tiny_net("ws")), checkpoint=path, checkpoint_every=2,
                           callback=lambda step, value, net: step < 4, **settings)
    assert stopped.status == "stopped"
    resumed = tp.solve_ocp(streamed_ocp(tiny_net("ws")), checkpoint=path, checkpoint_every=2, resume=True,
                           **settings)
    _same_network(full.network, resumed.network)
    np.testing.assert_array_equal(full.history["objective"], resumed.history["objective"])


def _write_folder(root, count_per_class=6, size=10):
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(count_per_class):
            pixels = rng.integers(0, 50, (size, size + 2)).astype(np.uint8)
            r, c = divmod(label, 2)
            pixels[r * 5:r * 5 + 5, c * 6:c * 6 + 6] += 180
            Image.fromarray(pixels, mode="L").save(root / f"class{label}" / f"{i}.png")
    return root


def test_an_augmented_image_folder_dataset_is_the_same_for_any_worker_count(tmp_path):
    """Random-resized crops drawn from (seed, epoch, index): 0 and 2 workers train the same network, the
    epochs draw different crops (set_epoch reaches the workers), and the solution evaluates the
    training set without augmentation (unaugmented())."""
    folder = _write_folder(tmp_path / "images")
    dataset = ImageFolderDataset(folder, size=8, channels=1, augment=True, crop_scale=(0.5, 1.0), seed=3)
    assert isinstance(dataset, SupportsEpoch) and isinstance(dataset, SupportsUnaugmented)
    epochs = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        epochs.append(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert not torch.equal(*epochs)
    solutions = [tp.solve_ocp(streamed_ocp(tiny_net("ws"), dataset=dataset), loader_workers=workers,
                              **dict(SOLVE, steps=6, batch_size=8)) for workers in (0, 2)]
    _same_network(*(solution.network for solution in solutions))
    plain = tp.data.image_folder(folder, size=8, channels=1, split=(folder, folder))
    # the training metrics are those of the folder's plain (resized, not cropped) images
    costs = tiny_ocp(tiny_net("ws"))
    resident = tp.OCP(solutions[0].network, plain.train_images, plain.train_labels, stage_cost=costs.stage_cost,
                      terminal_cost=costs.terminal_cost)
    backend = make_backend(resident, seed=0, batch_size=8, device="cpu", settings={"normalise": SOLVE["normalise"]})
    again = backend.solution(status=solutions[0].status, message="", history=solutions[0].history, wall_time_s=0.0)
    np.testing.assert_allclose(again.exit_metrics["train_loss"], solutions[0].exit_metrics["train_loss"], rtol=1e-6)


class BadLabel(Pairs):
    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image, CLASSES + 3 if index == 30 else label


class BadShape(Pairs):
    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return (image[:, :6] if index == 30 else image), label


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("dataset, message", [
    (BadLabel, r"^inputs: expected labels in 0\.\.3, got labels in \d+\.\.7$"),
    (BadShape, r"^inputs: expected every image of shape \(1, 8, 8\) .*got one of shape \(1, 6, 8\)"),
])
def test_a_bad_item_found_while_training_is_a_one_line_error(dataset, message, workers):
    images, labels = tiny_data()
    ocp = streamed_ocp(tiny_net("ws"), dataset=dataset(images, labels))
    with pytest.raises(ValueError, match=message) as caught:
        tp.solve_ocp(ocp, loader_workers=workers, **dict(SOLVE, steps=6, batch_size=48))
    assert "\n" not in str(caught.value)


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from ()


@pytest.mark.parametrize("inputs, labels, name, message", [
    (Pairs(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), []), None, "inputs", "at least one"),
    (Pairs(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0, 1, 2, 3]), None, "inputs[0][0]", r"an image of shape \(1, any, any\)"),
    (Pairs(torch.zeros(4, 1, 8, 8, dtype=torch.int32), [0, 1, 2, 3]), None, "inputs[0][0]", "uint8 or floating"),
    (Pairs(tiny_data()[0], tiny_data()[1]), tiny_data()[1], "labels", "None"),
    (Endless(), None, "inputs", "map-style"),
])
def test_bad_datasets_are_refused_when_the_ocp_is_built(inputs, labels, name, message):
    ocp = tiny_ocp(tiny_net("ws"))
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: expected .*{message}"):
        tp.OCP(ocp.system, inputs, labels, stage_cost=ocp.stage_cost, terminal_cost=ocp.terminal_cost)


class FloatLabel(Pairs):
    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image, float(label)


def test_bad_dataset_uses_elsewhere_are_refused():
    images, labels = tiny_data()
    ocp = tiny_ocp(tiny_net("ws"))
    with pytest.raises(ValueError, match=r"^inputs\[0\]\[1\]: expected an integer class label"):
        tp.OCP(ocp.system, FloatLabel(images, labels), None, stage_cost=ocp.stage_cost, terminal_cost=ocp.terminal_cost)
    flat = tp.TwoLayerResNet(state_dim=4, hidden_dim=3, depth=2)
    with pytest.raises(ValueError, match="^inputs: expected"):
        tp.OCP(flat, Pairs(images, labels), None, terminal_cost=tp.CrossEntropy(num_classes=4))
    streamed = streamed_ocp(tiny_net("ws"))
    with pytest.raises(ValueError, match="^inputs: expected a batch of prepared images .*Dataset"):
        tp.objective_tensor(streamed, torch.zeros(3, dtype=torch.float64), mode="train")
    with pytest.raises(ValueError, match="^test_data: expected uint8 images like the training inputs"):
        tp.solve_ocp(streamed, test_data=Pairs(images.float(), labels), **dict(SOLVE, steps=1))
    with pytest.raises(ValueError, match="^loader_workers: expected"):
        tp.solve_ocp(streamed, loader_workers=-1, **dict(SOLVE, steps=1))
    with pytest.raises(ValueError, match="^test_data: expected a pair"):
        tp.solve_ocp(tp.OCP(flat, np.zeros((4, 4)), [0, 1, 2, 3], terminal_cost=tp.CrossEntropy(num_classes=4)),
                     test_data=Pairs(images, labels), steps=1, progress=False)


def _streamed_rank_worker(rank, folder, streamed):
    ocp = streamed_ocp(tiny_net("full")) if streamed else tiny_ocp(tiny_net("full"))
    solution = tp.solve_ocp(ocp, sync_batchnorm=True, **{**SOLVE, "steps": 4, "batch_size": 15})
    torch.save(solution.network.state_dict(), folder / f"{'streamed' if streamed else 'resident'}{rank}.pt")


def test_ranks_reading_their_shares_of_a_dataset_train_as_ranks_holding_the_tensors(tmp_path):
    """Two gloo ranks, each loading only its share of every batch: the networks of two ranks that hold
    the whole data set (without augmentation the shares are the same samples)."""
    run_ranks(_streamed_rank_worker, tmp_path, True)
    run_ranks(_streamed_rank_worker, tmp_path, False)
    for rank in range(2):
        streamed, resident = (torch.load(tmp_path / f"{kind}{rank}.pt") for kind in ("streamed", "resident"))
        for name, value in resident.items():
            assert torch.equal(streamed[name], value), name
