"""PatchPoolDataLoader: one decode per image, batches that mix the patches of several images (issue #9)."""

from __future__ import annotations

import torch
from monai.data import Dataset, DistributedSampler
from monai.utils import set_determinism

from cxr_monai.apps.inpainting import CenterHoleCollate
from cxr_monai.data.patch_loader import (
    PatchPoolDataLoader,
    ShuffledCollate,
    split_batch,
)


def _image_patches(index: int, count: int = 20, size: int = 16) -> list[dict]:
    """``count`` patches of image ``index``, each filled with the image's number so batches show their sources."""
    return [{"image": torch.full((1, size, size), float(index)), "source": index} for _ in range(count)]


class _Images(Dataset):
    def __init__(self, n: int, count: int = 20):
        super().__init__(list(range(n)))
        self.count = count

    def _transform(self, index):
        return _image_patches(self.data[index], self.count)


def test_batches_mix_the_patches_of_every_image_of_a_load():
    set_determinism(seed=0)
    loader = PatchPoolDataLoader(_Images(12), batch_size=4, batches_per_load=5, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 * 5
    for batch in batches:
        assert batch["image"].shape == (16, 1, 16, 16) and len(batch["source"]) == 16
        assert len(set(batch["source"].tolist())) >= 3  # 16 patches of a 4-image pool (one image would be 1)
        assert torch.equal(batch["image"][:, 0, 0, 0].long(), batch["source"])  # keys stay aligned after shuffling
    counts = torch.bincount(torch.cat([b["source"] for b in batches]), minlength=12)
    assert counts.tolist() == [20] * 12  # every patch of every image, once per epoch


def test_a_plain_loader_gives_one_image_a_batch():
    """What the BatchNorm issue came from: batch_size 1 and 20 patches a batch means one image a batch."""
    loader = PatchPoolDataLoader(_Images(3), batch_size=1, batches_per_load=1)
    assert [len(set(b["source"].tolist())) for b in loader] == [1, 1, 1]


def test_training_collate_and_distributed_sampler():
    set_determinism(seed=0)
    dataset = Dataset([i for i in range(8)], transform=lambda i: [
        {"image": torch.rand(1, 32, 32) + i} for _ in range(10)])
    collate = CenterHoleCollate("image", hole_size=16, keep_patches=False)
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    loader = PatchPoolDataLoader(dataset, batch_size=2, batches_per_load=4, sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(loader) == len(batches) == 2 * 4  # 4 images on this rank, 2 a load, 4 batches a load
    assert all(b["masked"].shape == (5, 1, 32, 32) and b["target"].shape == (5, 1, 16, 16) for b in batches)
    assert all(b["weight"].shape == (5, 1, 16, 16) for b in batches)


def test_shuffled_collate_and_split_batch():
    torch.manual_seed(0)
    batch = ShuffledCollate()([{"x": torch.tensor([i]), "name": f"p{i}"} for i in range(10)])
    assert sorted(batch["x"].ravel().tolist()) == list(range(10)) and batch["x"].ravel().tolist() != list(range(10))
    assert [int(name[1:]) for name in batch["name"]] == batch["x"].ravel().tolist()
    parts = split_batch({"x": torch.arange(10), "shared": 3}, 3)
    assert [len(p["x"]) for p in parts] == [3, 4, 3] and all(p["shared"] == 3 for p in parts)
    assert parts[1]["x"].untyped_storage().data_ptr() == parts[0]["x"].untyped_storage().data_ptr()  # views


def test_a_partial_last_load_gives_proportionally_fewer_batches():
    loader = PatchPoolDataLoader(_Images(21), batch_size=8, batches_per_load=4)  # loads of 8, 8 and 5 images
    sizes = [len(batch["source"]) for batch in loader]
    assert len(loader) == len(sizes) == 4 + 4 + 2 and sizes[-2:] == [50, 50] and set(sizes[:8]) == {40}
    assert len(PatchPoolDataLoader(_Images(21), batch_size=8, batches_per_load=4, drop_last=True)) == 8
