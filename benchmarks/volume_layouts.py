"""A 3D volume as the viewer would show it: today's ``Array3D`` against a list of slice images.

Both layouts are lossless and typed by ``datasets``: ``Array3D`` (read as nested lists, the
viewer prints it as numbers cut to 100 characters) and ``List(Image())`` of the axial slices
(read as a list of PIL images, ``np.stack`` gives the array back; the viewer draws each slice).
On the real AdrenalMNIST3D file, for each layout: Parquet bytes of the train split (hfmed's
layout, ``hfmed.parquet_options``), and the viewer's first page by ``hfmed.viewer_rules``. Usage:

    python benchmarks/volume_layouts.py --work /tmp/vol
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datasets import Array3D, ClassLabel, Features, Image, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hfmed import parquet_options, png, viewer_rules  # noqa: E402


def slices_table(features: Features, volumes: np.ndarray, labels: np.ndarray):
    import pyarrow as pa

    n, d = volumes.shape[:2]
    pngs = png.encode_batch(np.ascontiguousarray(volumes.reshape(n * d, *volumes.shape[2:])))
    images = pa.StructArray.from_arrays(
        [pa.array(pngs, pa.binary()), pa.nulls(len(pngs), pa.string())], names=["bytes", "path"]
    )
    column = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), images)
    return pa.table({"label": pa.array(labels, pa.int64()), "slices": column}, schema=features.arrow_schema)


def main() -> None:
    from hfmed.features import encode_batch

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = np.load(HERE.parent.parent / "shared" / "data" / "medmnist" / "adrenalmnist3d.npz")
    volumes, labels = src["train_images"], src["train_labels"].reshape(-1).astype(np.int64)
    label = ClassLabel(names=["normal", "hyperplasia"])
    s = volumes.shape[1]
    layouts = {
        "Array3D (today)": Features({"label": label, "volume": Array3D((s, s, s), "uint8")}),
        "List(Image()) of axial slices": Features({"label": label, "slices": List(Image())}),
    }
    print("| layout | train MB | first page rows | cells cut | /rows page of 100 rows |")
    print("|---|---:|---:|---|---:|")
    for name, features in layouts.items():
        if "volume" in features:
            table = encode_batch(features, {"label": labels, "volume": volumes})
        else:
            table = slices_table(features, volumes, labels)
        path = args.work / "train.parquet"
        pq.write_table(
            table, path, row_group_size=min(len(table), 690), **parquet_options.writer_options(features, table.schema)
        )
        page = viewer_rules.first_rows(
            features, table.slice(0, 100), len(table), dataset="<org>/medmnist", config="adrenalmnist3d", split="train"
        )
        cut = ", ".join(f"{c} in {k} rows" for c, k in page.cut.items()) or "none"
        print(
            f"| {name} | {path.stat().st_size / 1e6:.2f} | {page.rows} of {page.wanted} | "
            f"{cut} | {page.page_bytes / 1e6:.2f} MB |"
        )


if __name__ == "__main__":
    main()
