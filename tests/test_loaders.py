"""hfmed.loaders: every row once per epoch, in the right form, whatever the ranks and workers.

The builds here are small generated MedMNIST files written with tiny shards and row groups, so a
split of ~100 rows spans several files and a dozen row groups. Rows are recognised by their pixels
(the generated images are random), which lets every test compare what came out with the source
arrays themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, make_medmnist_npz

from hfmed import loaders
from hfmed.errors import UserError
from hfmed.loaders import built, plan
from hfmed.loaders.dataset import StreamingImageDataset

ROWS = {"train": 103, "val": 17, "test": 9}
BATCH = 8


def _build(out: Path, src: Path, name: str, rows: dict[str, int], shard_rows: int, group_rows: int) -> Path:
    from hfmed.loading_scripts.medmnist import MedMNIST

    import hfmed.writer as writer

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generated file is not an official one, by design
        mp.setattr(writer, "SHARD_MAX_ROWS", shard_rows)
        mp.setattr(writer, "ROW_GROUP_MAX_ROWS", group_rows)
        flag, _, size = name.partition("_")
        path = make_medmnist_npz(src, flag, int(size or 28), rows, seed=7)
        writer.build_config(MedMNIST(name, path, unofficial=True), out, progress=False)
    return path


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A ``medmnist`` folder: several shards and row groups per split, plus a one-shard config."""
    root = tmp_path_factory.mktemp("loaders")
    out, src = root / "medmnist", root / "npz"
    src.mkdir()
    npz = {}
    for name in ("pneumoniamnist", "chestmnist", "pathmnist", "adrenalmnist3d"):
        npz[name] = _build(out, src, name, ROWS, shard_rows=40, group_rows=10)
    npz["breastmnist"] = _build(
        out, src, "breastmnist", {"train": 40, "val": 5, "test": 5}, shard_rows=20_000, group_rows=2_000
    )
    npz["dermamnist_64"] = _build(
        out, src, "dermamnist_64", {"train": 24, "val": 4, "test": 4}, shard_rows=10, group_rows=5
    )
    return out, {k: np.load(v) for k, v in npz.items()}


def _index(images: np.ndarray) -> dict[bytes, int]:
    table = {np.ascontiguousarray(a).tobytes(): i for i, a in enumerate(images)}
    assert len(table) == len(images), "generated images must be distinct"
    return table


def _rows(batches, images: np.ndarray, labels: np.ndarray) -> list[int]:
    """Source row of every example yielded (checking its label on the way), in order."""
    table = _index(images)
    seen = []
    for batch in batches:
        pixels = batch["pixel_values"]
        assert pixels.dtype == torch.uint8
        x = pixels.numpy()
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
        for row, label in zip(x, batch["labels"].numpy()):
            i = table[np.ascontiguousarray(row).tobytes()]
            assert np.array_equal(np.asarray(label).reshape(-1), labels[i].reshape(-1)), (
                f"row {i}: label {label} != {labels[i]}"
            )
            seen.append(i)
    return seen


def _uint8(build, name, **kw):
    out, _ = build
    kw.setdefault("batch_size", BATCH)
    return loaders.dataloader(out, name, dtype=torch.uint8, progress=False, **kw)


# --- the epoch plan ----------------------------------------------------------------------------


@pytest.mark.parametrize("drop_last", [False, True])
def test_plan_gives_every_row_to_exactly_one_rank_and_worker(drop_last):
    rng = np.random.default_rng(0)
    for unit_rows in ([1], [7], [10] * 11 + [3], rng.integers(1, 40, 9).tolist()):
        total = sum(unit_rows)
        starts = np.concatenate([[0], np.cumsum(unit_rows)])
        for world in (1, 2, 3):
            for workers in (1, 2, 4):
                for batch in (1, 4, 16):
                    counts = np.zeros(total, dtype=int)
                    steps = []
                    for rank in range(world):
                        batches = 0
                        for w in range(workers):
                            kw = dict(
                                rank=rank,
                                world=world,
                                workers=workers,
                                batch=batch,
                                shuffle=True,
                                seed=3,
                                epoch=1,
                                target_rows=8,
                                drop_last=drop_last,
                            )
                            for block in plan.epoch_blocks(unit_rows, **kw)[w::workers]:
                                assert block.num_rows > 0
                                batches += -(-block.num_rows // batch)
                                for p in block.pieces:
                                    counts[starts[p.unit] + p.start : starts[p.unit] + p.stop] += 1
                        steps.append(batches)
                    if drop_last:
                        assert counts.max() <= 1 and len(set(steps)) == 1, (unit_rows, world, workers, batch)
                        assert counts.sum() == world * (total // world // batch * batch)
                    else:
                        assert counts.min() == counts.max() == 1, (unit_rows, world, workers, batch)


def test_blocks_keep_every_worker_busy_and_whole_batches():
    sizes = plan.block_sizes(4708, batch=256, workers=2, target_rows=4096)
    assert sum(sizes) == 4708 and len(sizes) % 2 == 0
    assert all(s % 256 == 0 for s in sizes[:-1])
    per_worker = [sum(-(-s // 256) for s in sizes[w::2]) for w in range(2)]  # batches
    assert max(per_worker) - min(per_worker) <= 1
    assert plan.block_sizes(20, batch=8, workers=4, target_rows=100) == [8, 8, 4]  # 3 batches: 3 blocks


# --- rows, labels and pixels ---------------------------------------------------------------------


def test_unshuffled_batches_are_the_source_in_order(build):
    _, npz = build
    src = npz["pneumoniamnist"]
    seen = _rows(_uint8(build, "pneumoniamnist"), src["train_images"], src["train_labels"])
    assert seen == list(range(ROWS["train"]))
    val = _rows(_uint8(build, "pneumoniamnist", split="validation"), src["val_images"], src["val_labels"])
    assert val == list(range(ROWS["val"]))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_once_per_epoch_across_workers(build, workers):
    _, npz = build
    src = npz["pneumoniamnist"]
    loader = _uint8(build, "pneumoniamnist", shuffle=True, num_workers=workers, seed=5)
    for _ in range(2):  # two epochs, each complete
        seen = _rows(loader, src["train_images"], src["train_labels"])
        assert sorted(seen) == list(range(ROWS["train"]))
    assert len(loader) == -(-ROWS["train"] // BATCH)


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_split_the_rows_between_them(build, workers):
    _, npz = build
    src = npz["pneumoniamnist"]
    shares = []
    for rank in (0, 1):
        loader = _uint8(build, "pneumoniamnist", shuffle=True, num_workers=workers, seed=11, rank=rank, world_size=2)
        shares.append(_rows(loader, src["train_images"], src["train_labels"]))
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(ROWS["train"]))
    assert abs(len(shares[0]) - len(shares[1])) <= 1


def test_drop_last_gives_every_rank_the_same_full_batches(build):
    counts = []
    for rank in (0, 1):
        loader = _uint8(build, "pneumoniamnist", shuffle=True, num_workers=2, rank=rank, world_size=2, drop_last=True)
        sizes = [len(b["labels"]) for b in loader]
        assert set(sizes) == {BATCH} and len(sizes) == len(loader)
        counts.append(len(sizes))
    assert counts[0] == counts[1] == (ROWS["train"] // 2) // BATCH


def test_rank_and_world_come_from_torchrun_variables(build, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    loader = _uint8(build, "pneumoniamnist")
    assert sum(len(b["labels"]) for b in loader) == ROWS["train"] - ROWS["train"] // 2
    whole = _uint8(build, "pneumoniamnist", world_size=1)  # e.g. accelerate dispatching from rank 0
    assert sum(len(b["labels"]) for b in whole) == ROWS["train"]
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UserError, match="RANK=2"):
        len(_uint8(build, "pneumoniamnist"))


def test_shuffling_is_seeded_and_changes_with_seed_and_epoch(build):
    _, npz = build
    src = npz["pneumoniamnist"]

    def order(seed, epoch, workers=0):
        loader = _uint8(build, "pneumoniamnist", shuffle=True, seed=seed, num_workers=workers)
        loader.set_epoch(epoch)
        return _rows(loader, src["train_images"], src["train_labels"])

    first = order(1, 0)
    assert first == order(1, 0)
    assert order(1, 0, workers=2) == order(1, 0, workers=2)
    assert first != list(range(ROWS["train"]))
    assert first != order(2, 0)
    assert first != order(1, 1)
    loader = _uint8(build, "pneumoniamnist", shuffle=True, seed=1)
    again = [_rows(loader, src["train_images"], src["train_labels"]) for _ in range(2)]
    assert again[0] == first and again[1] == order(1, 1)  # each pass is the next epoch
    persistent = _uint8(build, "pneumoniamnist", shuffle=True, seed=1, num_workers=2, persistent_workers=True)
    passes = [_rows(persistent, src["train_images"], src["train_labels"]) for _ in range(2)]
    assert passes == [order(1, 0, workers=2), order(1, 1, workers=2)]  # set_epoch reaches running workers


def test_multi_label_batches_are_multi_hot(build):
    out, npz = build
    src = npz["chestmnist"]
    loader = loaders.dataloader(out, "chestmnist", batch_size=BATCH, num_workers=2, shuffle=True, progress=False)
    assert loader.task == "multi-label" and len(loader.label_names) == 14
    table = _index(src["train_images"])
    seen = []
    for batch in loader:
        labels = batch["labels"]
        assert labels.dtype == torch.float32 and labels.shape[1] == 14
        assert set(labels.unique().tolist()) <= {0.0, 1.0}
        pixels = (batch["pixel_values"][:, 0] * 255).round().to(torch.uint8).numpy()
        for row, label in zip(pixels, labels.numpy()):
            i = table[row.tobytes()]
            assert np.array_equal(label, src["train_labels"][i].astype(np.float32))
            seen.append(i)
    assert sorted(seen) == list(range(ROWS["train"]))


def test_rgb_and_volumes_come_out_as_stored(build):
    _, npz = build
    src = npz["pathmnist"]
    assert sorted(_rows(_uint8(build, "pathmnist", num_workers=2), src["train_images"], src["train_labels"])) == list(
        range(ROWS["train"])
    )
    big = npz["dermamnist_64"]  # PNGs large enough to be inflated apart from Pillow's decoder
    assert _rows(_uint8(build, "dermamnist_64"), big["train_images"], big["train_labels"]) == list(range(24))
    vol = npz["adrenalmnist3d"]
    loader = _uint8(build, "adrenalmnist3d", shuffle=True)
    assert loader.info.volumetric and loader.info.image_column == "volume"
    table = _index(vol["train_images"])
    seen = []
    for batch in loader:
        assert batch["pixel_values"].shape[1:] == (1, 28, 28, 28)
        for v, label in zip(batch["pixel_values"][:, 0].numpy(), batch["labels"].numpy()):
            i = table[v.tobytes()]
            assert label == vol["train_labels"][i, 0]
            seen.append(i)
    assert sorted(seen) == list(range(ROWS["train"]))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # torch's advice on a 2-CPU machine
def test_fewer_shards_and_row_groups_than_workers(build):
    out, npz = build
    (shard,) = (out / "breastmnist").glob("train-*.parquet")
    assert pq.ParquetFile(shard).metadata.num_row_groups == 1
    src = npz["breastmnist"]
    for workers in (2, 3):
        loader = _uint8(build, "breastmnist", shuffle=True, num_workers=workers)
        assert sorted(_rows(loader, src["train_images"], src["train_labels"])) == list(range(40))
    with pytest.warns(UserWarning, match="using 3 DataLoader worker"):
        loader = _uint8(build, "breastmnist", batch_size=16, num_workers=8)
    assert loader.num_workers == 3
    assert sorted(_rows(loader, src["train_images"], src["train_labels"])) == list(range(40))


# --- the batch transform -------------------------------------------------------------------------


def test_float_batches_are_to_tensor_scaled_and_normalised(build):
    out, npz = build
    src = npz["pneumoniamnist"]["train_images"]
    batch = next(iter(loaders.dataloader(out, "pneumoniamnist", batch_size=BATCH, progress=False)))
    assert batch["pixel_values"].dtype == torch.float32
    expected = torch.from_numpy(src[:BATCH]).float().unsqueeze(1) / 255
    assert torch.allclose(batch["pixel_values"], expected, atol=1e-6)
    norm = next(
        iter(
            loaders.dataloader(
                out,
                "pneumoniamnist",
                batch_size=BATCH,
                rgb=True,
                mean=(0.5, 0.4, 0.3),
                std=(0.2, 0.25, 0.5),
                progress=False,
            )
        )
    )
    x = norm["pixel_values"]
    assert x.shape == (BATCH, 3, 28, 28)
    for c, (m, s) in enumerate(zip((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))):
        assert torch.allclose(x[:, c], (expected[:, 0] - m) / s, atol=1e-5)


@pytest.mark.parametrize(
    "config, kw",
    [
        ("pneumoniamnist", {}),
        ("pathmnist", dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))),
        ("pneumoniamnist", dict(rgb=True, mean=(0.5,), std=(0.25,), image_size=32)),
    ],
)
def test_workers_hand_over_the_same_float_batches(build, config, kw):
    """With workers, batches cross processes as uint8 and are finished in the consumer: same values."""
    out, _ = build
    one = [b["pixel_values"] for b in loaders.dataloader(out, config, batch_size=BATCH, progress=False, **kw)]
    two = [
        b["pixel_values"]
        for b in loaders.dataloader(out, config, batch_size=BATCH, num_workers=2, progress=False, **kw)
    ]
    assert all(b.dtype == torch.float32 and b.is_contiguous() for b in two)

    def key(b):  # workers interleave batches; compare them as a set
        return b.flatten().tolist()[:64]

    assert sorted(map(key, one)) == sorted(map(key, two))
    assert torch.equal(torch.cat(sorted(one, key=key)), torch.cat(sorted(two, key=key)))


def test_resize_augment_and_the_device_path_agree(build):
    out, npz = build
    src = torch.from_numpy(npz["pneumoniamnist"]["train_images"][:BATCH]).unsqueeze(1)

    def flip(x):
        return x.flip(-1)

    kw = dict(batch_size=BATCH, image_size=56, rgb=True, augment=flip, mean=(0.5,), std=(0.25,), progress=False)
    workers = next(iter(loaders.dataloader(out, "pneumoniamnist", num_workers=2, **kw)))["pixel_values"]
    device = loaders.dataloader(out, "pneumoniamnist", device="cpu", **kw)
    raw_first = next(iter(torch.utils.data.DataLoader(device.dataset, batch_size=None)))["pixel_values"]
    assert raw_first.dtype == torch.uint8 and raw_first.shape == (BATCH, 1, 28, 28)  # what crosses the bus
    on_device = next(iter(device))["pixel_values"]
    expected = F.interpolate(src, size=(56, 56), mode="bilinear", align_corners=False).flip(-1).expand(-1, 3, -1, -1)
    expected = (expected.float() / 255 - 0.5) / 0.25
    assert workers.shape == on_device.shape == (BATCH, 3, 56, 56)
    assert torch.allclose(workers, expected, atol=1e-5)
    assert torch.equal(workers, on_device)
    shrink = next(
        iter(loaders.dataloader(out, "pathmnist", batch_size=BATCH, image_size=14, dtype=torch.uint8, progress=False))
    )
    assert shrink["pixel_values"].shape == (BATCH, 3, 14, 14) and shrink["pixel_values"].is_contiguous()
    vol = next(
        iter(loaders.dataloader(out, "adrenalmnist3d", batch_size=2, image_size=14, device="cpu", progress=False))
    )
    assert vol["pixel_values"].shape == (2, 1, 14, 14, 14) and vol["pixel_values"].dtype == torch.float32


@pytest.mark.parametrize("recycled", [False, True])
def test_batches_kept_by_the_consumer_stay_intact(build, monkeypatch, recycled):
    """Decode buffers and batch memory are reused; nothing handed out and still held may share them.

    ``recycled``: batch memory goes through BatchMemory at any size (normally only from 4 MiB).
    """
    from hfmed.loaders import dataset

    if recycled:
        monkeypatch.setattr(dataset, "HUGE_PAGE_MIN_BYTES", 0)
    _, npz = build
    src = npz["pneumoniamnist"]
    for kw in (
        dict(augment=lambda x: x),
        dict(image_size=28),
        dict(streaming=True, decode_threads=1),
        dict(num_workers=2),
    ):
        kept = list(_uint8(build, "pneumoniamnist", shuffle=True, **kw))
        assert sorted(_rows(kept, src["train_images"], src["train_labels"])) == list(range(ROWS["train"]))
    expected = torch.from_numpy(src["train_images"]).float().div(255).sub(0.5).div(0.25)
    for workers, device in (
        (0, None),
        (2, None),
        (0, "cpu"),
        (2, "cpu"),
    ):  # float batches: converted in the process that yields them
        kw = dict(batch_size=BATCH, mean=(0.5,), std=(0.25,), num_workers=workers, device=device, progress=False)
        kept = list(loaders.dataloader(build[0], "pneumoniamnist", **kw))
        got = torch.cat([b["pixel_values"][:, 0] for b in kept])
        as_uint8 = [
            {
                "pixel_values": (got * 0.25 + 0.5).mul(255).round().to(torch.uint8).unsqueeze(1),
                "labels": torch.cat([b["labels"] for b in kept]),
            }
        ]
        rows = _rows(as_uint8, src["train_images"], src["train_labels"])  # workers interleave their batches
        assert sorted(rows) == list(range(ROWS["train"])) and torch.allclose(got, expected[rows], atol=1e-6)


def test_batch_memory_is_reused_only_when_nothing_refers_to_it(monkeypatch):
    """An area goes back to the pool when its last tensor, view or numpy array is gone, never before."""
    from hfmed.loaders import dataset

    monkeypatch.setattr(dataset, "HUGE_PAGE_MIN_BYTES", 0)
    memory = dataset.BatchMemory(keep=2)
    a = memory((4, 8), torch.float32)
    b = memory((4, 8), torch.float32)
    assert a.data_ptr() != b.data_ptr()
    pointer = a.data_ptr()
    del a
    c = memory((2, 8), torch.float32)  # a's area, free again, for a smaller batch
    assert c.data_ptr() == pointer and c.shape == (2, 8)
    c.fill_(7)
    b.fill_(9)
    view, array = c[1], b.numpy()
    del c, b
    fresh = [memory((4, 8), torch.float32) for _ in range(3)]  # a view or a numpy array holds its area
    for t in fresh:
        t.fill_(-1)
    assert {t.data_ptr() for t in fresh}.isdisjoint({pointer, array.ctypes.data})
    assert bool((view == 7).all()) and bool((array == 9).all())  # what the caller holds is intact
    assert len(memory.areas) == 2  # kept: at most `keep`; the others were fresh and go with their tensors
    del view
    assert memory((4, 8), torch.float32).data_ptr() == pointer  # the last holder let go


def test_batch_memory_replaces_a_short_batch_area_rather_than_allocating_afresh(monkeypatch):
    from hfmed.loaders import dataset

    monkeypatch.setattr(dataset, "HUGE_PAGE_MIN_BYTES", 0)
    memory = dataset.BatchMemory(keep=1)
    short = memory((2, 8), torch.float32)  # an epoch's last, short batch took the only area
    del short
    full = memory((4, 8), torch.float32)
    assert (
        len(memory.areas) == 1
        and full.data_ptr() == torch.frombuffer(memoryview(memory.areas[0]), dtype=torch.uint8).data_ptr()
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_kept_across_epochs_stay_intact(build, workers):
    """Batch memory outlives a pass (workers' slots, the consumer's areas): batches of earlier
    epochs that the caller still holds are never written into."""
    from hfmed.loaders import dataset

    _, npz = build
    src = npz["pneumoniamnist"]
    expected = torch.from_numpy(src["train_images"]).float().div(255).sub(0.5).div(0.25)
    table = _index(src["train_images"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dataset, "HUGE_PAGE_MIN_BYTES", 0)
        kw = dict(batch_size=BATCH, mean=(0.5,), std=(0.25,), num_workers=workers, shuffle=True, progress=False)
        loader = loaders.dataloader(build[0], "pneumoniamnist", persistent_workers=workers > 0, **kw)
        kept = [(b["pixel_values"], b["pixel_values"].clone()) for _ in range(3) for b in loader]
    assert len(kept) == 3 * len(loader)
    for held, copy in kept:
        assert torch.equal(held, copy)
        rows = [table[(x[0] * 0.25 + 0.5).mul(255).round().to(torch.uint8).numpy().tobytes()] for x in copy]
        assert torch.allclose(copy, expected[rows].unsqueeze(1), atol=1e-6)


def test_single_examples_for_a_dataloader_of_ones_own(build):
    out, npz = build
    src = npz["pneumoniamnist"]
    ds = StreamingImageDataset(out, "pneumoniamnist", batch_size=None, dtype=torch.uint8, shuffle=True, progress=False)
    assert len(ds) == ROWS["train"]
    example = next(iter(ds))
    assert example["pixel_values"].shape == (1, 28, 28) and example["labels"].shape == ()
    batches = torch.utils.data.DataLoader(ds, batch_size=7, num_workers=2)
    assert sorted(_rows(batches, src["train_images"], src["train_labels"])) == list(range(ROWS["train"]))


# --- other sources -------------------------------------------------------------------------------


def test_decoded_cache_gives_the_same_rows(build, tmp_path, monkeypatch):
    _, npz = build
    src = npz["pathmnist"]
    kw = dict(shuffle=True, seed=4, num_workers=2, streaming=False, cache_dir=tmp_path / "cache")
    seen = _rows(_uint8(build, "pathmnist", **kw), src["train_images"], src["train_labels"])
    assert sorted(seen) == list(range(ROWS["train"]))
    (folder,) = (tmp_path / "cache").iterdir()
    assert (folder / "pixels.u8").stat().st_size == src["train_images"].nbytes
    from hfmed.loaders import cache

    monkeypatch.setattr(cache, "_write_pixels", lambda *a, **k: pytest.fail("a complete cache was decoded again"))
    again = _rows(_uint8(build, "pathmnist", **kw), src["train_images"], src["train_labels"])
    assert sorted(again) == list(range(ROWS["train"]))


@pytest.fixture
def hub(build, monkeypatch):
    """``my-org/medmnist`` on a stand-in for the Hub filesystem: an in-memory one holding the build."""
    import fsspec

    out, _ = build
    fs = fsspec.filesystem("memory")
    for path in out.rglob("*"):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(out).parts):
            fs.pipe(f"/datasets/my-org/medmnist/{path.relative_to(out).as_posix()}", path.read_bytes())
    monkeypatch.setattr(built, "hub_filesystem", lambda token: fs)
    yield "my-org/medmnist"
    fs.store.clear()


def test_hub_repositories_are_read_through_the_hub_filesystem(build, hub):
    _, npz = build
    src = npz["pneumoniamnist"]
    assert loaders.task_info(hub, "pneumoniamnist").label_names == ("normal", "pneumonia")
    loader = loaders.dataloader(
        hub, "pneumoniamnist", batch_size=BATCH, dtype=torch.uint8, num_workers=2, shuffle=True, progress=False
    )
    assert loader.dataset.source.location.remote
    assert sorted(_rows(loader, src["train_images"], src["train_labels"])) == list(range(ROWS["train"]))


def test_hub_shards_are_closed_once_read(build, hub, monkeypatch):
    """Every shard the loader opens on the Hub is closed by the loader itself (not left to garbage
    collection, or to interpreter exit), after listing the split and after each pass, finished or not."""
    fs = built.hub_filesystem(None)
    opened, closed = [], set()
    real_open = fs.open

    def tracked_open(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if str(path).endswith(".parquet"):
            real_close = f.close  # the memory filesystem's close keeps the data; record the call
            f.close = lambda: (closed.add(id(f)), real_close())[1]
            opened.append(f)
        return f

    monkeypatch.setattr(fs, "open", tracked_open)
    loader = loaders.dataloader(hub, "pneumoniamnist", batch_size=BATCH, dtype=torch.uint8, progress=False)
    assert opened and {id(f) for f in opened} <= closed  # the metadata of every shard, one image
    assert sum(len(b["labels"]) for b in loader) == ROWS["train"]
    it = iter(loader)
    next(it)
    it.close()  # an epoch left early (a break, an exception)
    assert len(opened) >= 3 + 1 + 3 + 1 and {id(f) for f in opened} <= closed  # listing, first image, epoch, early exit


def test_hub_repositories_download_the_split_when_not_streaming(build, hub, tmp_path, monkeypatch):
    import huggingface_hub

    out, npz = build
    asked = {}

    def snapshot(repo_id, **kw):
        asked.update(kw, repo_id=repo_id)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    loader = loaders.dataloader(
        hub, "pneumoniamnist", batch_size=BATCH, dtype=torch.uint8, streaming=False, cache_dir=tmp_path, progress=False
    )
    assert asked["repo_id"] == "my-org/medmnist" and "pneumoniamnist/train-*.parquet" in asked["allow_patterns"]
    assert loader.dataset.source.location.remote is False
    src = npz["pneumoniamnist"]
    assert sorted(_rows(loader, src["train_images"], src["train_labels"])) == list(range(ROWS["train"]))


def _medimeta_like(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A config with two tasks (ordinal and multi-label), as the MedIMeta builder declares them."""
    from datasets import ClassLabel, Features, Image, List

    from hfmed.features import encode_batch, schema_with_metadata

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (30, 16, 16), dtype=np.uint8)
    grade = rng.integers(0, 4, 30)
    findings = rng.integers(0, 2, (30, 3)).astype(np.uint8)
    features = Features(
        {"image": Image(), "grade": ClassLabel(names=list("abcd")), "findings": List(ClassLabel(names=["x", "y", "z"]))}
    )
    meta = {
        "collection": "medimeta",
        "config": "toy",
        "tasks": [{"column": "grade", "type": "ordinal"}, {"column": "findings", "type": "multi-label"}],
    }
    table = encode_batch(features, {"image": images, "grade": grade, "findings": findings})
    (folder / "toy").mkdir(parents=True)
    pq.write_table(
        table.replace_schema_metadata(schema_with_metadata(features, meta).metadata),
        folder / "toy" / "train-00000-of-00001.parquet",
        row_group_size=7,
    )
    return images, grade, findings


def test_a_task_column_is_chosen_by_name(tmp_path):
    images, grade, findings = _medimeta_like(tmp_path / "medimeta")
    root = tmp_path / "medimeta"
    with pytest.raises(UserError, match="several tasks; choose one with task= \\(grade, findings\\)"):
        loaders.task_info(root, "toy")
    info = loaders.task_info(root, "toy", task="grade")
    assert (info.task, info.label_names, info.channels, info.image_size) == ("ordinal", ("a", "b", "c", "d"), 1, 16)
    assert loaders.task_info(root, "toy", task="findings").task == "multi-label"
    loader = loaders.dataloader(
        root, "toy", task="findings", batch_size=4, dtype=torch.uint8, num_workers=2, progress=False
    )
    assert sorted(_rows(loader, images, findings)) == list(range(30))
    loader = loaders.dataloader(root, "toy", task="grade", batch_size=4, dtype=torch.uint8, progress=False)
    assert _rows(loader, images, grade) == list(range(30))


# --- what users get wrong --------------------------------------------------------------------------


def test_mistakes_are_one_clear_line(build, tmp_path):
    out, _ = build
    cases = [
        (dict(source=out, config="nosuchmnist"), "has no config 'nosuchmnist'; available: "),
        (
            dict(source=out, config="pneumoniamnist", split="dev"),
            "has no split 'dev'; available: train, validation, test",
        ),
        (
            dict(source=out, config="pneumoniamnist", task="grade"),
            "has no task column 'grade'; its label columns are: label",
        ),
        (dict(source=tmp_path / "no" / "such" / "folder", config="x"), "no such folder, and not a Hub dataset id"),
        (
            dict(source=out, config="pneumoniamnist", dtype=torch.uint8, mean=(0.5,), std=(0.2,)),
            "mean/std need a float dtype",
        ),
        (
            dict(source=out, config="pneumoniamnist", mean=(0.5, 0.5), std=(0.2, 0.2)),
            "mean has 2 values; the batches have 1 channel",
        ),
        (dict(source=out, config="adrenalmnist3d", rgb=True), "rgb=True applies to 2D images"),
        (dict(source=out, config="pneumoniamnist", rank=2, world_size=2), "rank 2 is not within world_size 2"),
    ]
    for kw, message in cases:
        with pytest.raises(UserError, match=None) as e:
            loaders.dataloader(progress=False, **kw)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_damaged_shards_are_named(build, tmp_path):
    out, _ = build
    copy = tmp_path / "medmnist"
    shutil.copytree(out / "breastmnist", copy / "breastmnist")
    (shard,) = (copy / "breastmnist").glob("train-*.parquet")
    shard.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        loaders.dataloader(copy, "breastmnist", progress=False)


def _damage_image(shard: Path, row: int, keep: int) -> None:
    """Rewrite ``shard`` (row groups of 10, as built) with the PNG of ``row`` cut to ``keep`` bytes."""
    import pyarrow as pa

    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[row]["bytes"] = images[row]["bytes"][:keep]
    i = table.schema.get_field_index("image")
    pq.write_table(
        table.set_column(i, table.schema.field(i), pa.array(images, type=table.schema.field(i).type)),
        shard,
        row_group_size=10,
    )


@pytest.mark.parametrize("workers, streaming", [(0, True), (2, True), (0, False)])
def test_a_damaged_image_is_named_by_file_row_group_and_row(build, tmp_path, workers, streaming):
    out, _ = build
    copy = tmp_path / "medmnist"
    shutil.copytree(out / "pneumoniamnist", copy / "pneumoniamnist")
    shard = copy / "pneumoniamnist" / "train-00001-of-00003.parquet"
    _damage_image(shard, 13, keep=300)  # a PNG that ends early ("image file is truncated")
    loader = (
        loaders.dataloader(copy, "pneumoniamnist", batch_size=BATCH, num_workers=workers, progress=False)
        if streaming
        else None
    )
    with pytest.raises(UserError) as e:  # with streaming=False, while decoding into the pixel cache
        for _ in loader or loaders.dataloader(
            copy, "pneumoniamnist", streaming=False, cache_dir=tmp_path / "cache", progress=False
        ):
            pass
    message = str(e.value)
    assert message.startswith(f"{shard}, row group 1, row 13: the image cannot be decoded (") and "\n" not in message, (
        message
    )
    assert "hfmed build --overwrite" in message
    assert not list((tmp_path / "cache").rglob("pixels.u8"))  # no half-written cache left to read


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_a_shard_removed_or_truncated_mid_epoch_is_named_through_workers(build, tmp_path, damage):
    out, _ = build
    copy = tmp_path / "medmnist"
    shutil.copytree(out / "pneumoniamnist", copy / "pneumoniamnist")
    loader = loaders.dataloader(
        copy,
        "pneumoniamnist",
        batch_size=BATCH,
        num_workers=2,
        persistent_workers=True,
        dtype=torch.uint8,
        progress=False,
    )
    assert sum(len(b["labels"]) for b in loader) == ROWS["train"]  # the first epoch, intact
    shard = copy / "pneumoniamnist" / "train-00001-of-00003.parquet"
    if damage == "removed":
        shard.unlink()
    else:
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        for _ in loader:
            pass
    message = str(e.value)
    assert message.startswith(f"{shard}, row group ") and "\n" not in message, message
    assert ("the file is gone" if damage == "removed" else "cannot be read (") in message


# --- shutting down -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_interpreter_exits_cleanly_with_an_iteration_in_flight(build, workers):
    out, _ = build
    script = textwrap.dedent(
        f"""
        import sys
        from hfmed import loaders
        options = dict(batch_size=4, num_workers={workers}, shuffle=True, progress=False)
        loader = loaders.dataloader({str(out)!r}, "dermamnist_64", **options)
        it = iter(loader)
        next(it); next(it)
        print("left mid-epoch", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "left mid-epoch" in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def _open_parquet_files() -> list[str]:
    fds = Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(str(fd.readlink()))
        except OSError:  # closed while listing
            pass
    return [t for t in targets if t.endswith(".parquet")]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_no_parquet_file_is_left_open(build):
    """Files are closed when the loader has read what it needed, and when an epoch is left early:
    nothing of the loader is left for interpreter exit to tear down."""
    out, _ = build
    assert not _open_parquet_files()
    loader = loaders.dataloader(out, "pneumoniamnist", batch_size=BATCH, shuffle=True, progress=False)
    assert not _open_parquet_files()  # listing the split and reading its first image
    assert sum(len(b["labels"]) for b in loader) == ROWS["train"]
    assert not _open_parquet_files()
    it = iter(loader)
    next(it)
    assert _open_parquet_files()  # this test can see an open shard
    it.close()  # what happens to an epoch left early (a break, an exception)
    assert not _open_parquet_files()


def test_worker_batch_memory_is_refilled_only_after_the_consumer_copied_it(build, monkeypatch):
    """Workers decode into recycled shared buffers (SlotPool); every float batch is still right."""
    from hfmed.loaders.dataset import SlotPool

    pool = SlotPool(max_slots=2)
    a, b = pool.take((4, 5), torch.uint8), pool.take((3, 5), torch.uint8)
    assert SlotPool.is_slot(a) and SlotPool.is_slot(b) and a.data_ptr() != b.data_ptr()
    spill = pool.take((4, 5), torch.uint8)  # both slots in use: fresh memory, never a wait
    assert not SlotPool.is_slot(spill) and spill.shape == (4, 5)
    SlotPool.release(b)
    again = pool.take((2, 5), torch.uint8)  # the released slot, for a shorter batch
    assert again.data_ptr() == b.data_ptr() and again.shape == (2, 5)
    assert not SlotPool.is_slot(pool.take((2,), torch.float32))

    released = []
    real = SlotPool.release
    monkeypatch.setattr(
        SlotPool, "release", staticmethod(lambda pixels: (released.append(pixels.data_ptr()), real(pixels)))
    )
    out, _ = build
    kw = dict(batch_size=2, progress=False, mean=(0.5,), std=(0.25,))
    one = list(loaders.dataloader(out, "pneumoniamnist", **kw))
    two = list(loaders.dataloader(out, "pneumoniamnist", num_workers=2, **kw))  # 52 batches: each slot refilled
    assert len(released) >= len(two) - 2 * 8 and len(set(released)) < len(released) / 2

    def key(b):
        return b["pixel_values"].flatten().tolist()[:32]

    for x, y in zip(sorted(one, key=key), sorted(two, key=key)):  # kept batches were not overwritten
        assert torch.equal(x["pixel_values"], y["pixel_values"]) and torch.equal(x["labels"], y["labels"])
