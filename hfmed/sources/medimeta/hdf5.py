"""``images.hdf5``: a dataset's images as one HDF5 array, read in a few contiguous slices per window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfmed.sources.medimeta.info import Info
from hfmed.sources.medimeta.layout import HDF5_DATASET, fail, regular_file

RUN_GAP = 8  # rows a contiguous HDF5 read may skip over rather than start a new read


def read_runs(sorted_indices: np.ndarray, max_span: int, gap: int = RUN_GAP) -> list[tuple[int, int, int, int]]:
    """Group ascending indices into contiguous reads: (first position, end position, lo, hi).

    Each read covers rows ``lo..hi-1`` of the file, skips at most ``gap`` unwanted rows between
    two wanted ones, and spans at most ``max_span`` rows, so a window never reads much more than
    it keeps.
    """
    runs = []
    n = len(sorted_indices)
    start = 0
    for i in range(1, n + 1):
        if (
            i == n
            or sorted_indices[i] - sorted_indices[i - 1] > gap + 1
            or sorted_indices[i] - sorted_indices[start] >= max_span
        ):
            runs.append((start, i, int(sorted_indices[start]), int(sorted_indices[i - 1]) + 1))
            start = i
    return runs


class Hdf5Images:
    """The ``images`` array of ``images.hdf5``, read by windows of row indices."""

    def __init__(self, path: Path, info: Info, root: Path) -> None:
        import h5py

        self.path = regular_file(path, root)
        self._file = None
        try:
            self._file = h5py.File(path, "r")
        except OSError as e:
            raise fail(
                path, f"not a readable HDF5 file ({' '.join(str(e).split())}); download images.hdf5 again"
            ) from None
        link = self._file.get(HDF5_DATASET, getlink=True)
        if link is not None and not isinstance(link, h5py.HardLink):
            self.close()
            raise fail(
                path,
                f"'{HDF5_DATASET}' is a {type(link).__name__} to another place; only an array "
                "stored in this file is read",
            )
        ds = self._file.get(HDF5_DATASET)
        if not isinstance(ds, h5py.Dataset):
            self.close()
            raise fail(path, f"has no '{HDF5_DATASET}' array; this is not a MedIMeta images.hdf5")
        if ds.external or ds.is_virtual:
            self.close()
            kind = (
                "external storage (raw data in other files)"
                if ds.external
                else "a virtual dataset (data mapped from other files)"
            )
            raise fail(
                path,
                f"'{HDF5_DATASET}' uses {kind}; only pixels stored in images.hdf5 itself are "
                "read, download the original file",
            )
        want = info.image_shape
        ok = ds.shape[1:] == want or (info.channels == 1 and ds.shape[1:] == want + (1,))
        if len(ds.shape) < 1 or not ok:
            self.close()
            raise fail(
                path,
                f"'{HDF5_DATASET}' has shape {ds.shape}, info.yaml input_size "
                f"{list(info.input_size)} means (N, {', '.join(map(str, want))})",
            )
        if ds.dtype != np.uint8:
            self.close()
            raise fail(path, f"'{HDF5_DATASET}' holds {ds.dtype}, expected uint8 pixels")
        self.ds = ds
        self.count = ds.shape[0]
        self.shape = want

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` in the order given, fetched as contiguous slices in index order."""
        out = np.empty((len(indices),) + self.shape, dtype=np.uint8)
        if not len(indices):
            return out
        order = np.argsort(indices, kind="stable")
        s = indices[order]
        try:
            for a, b, lo, hi in read_runs(s, max_span=max(len(indices), 1)):
                block = self.ds[lo:hi].reshape((hi - lo,) + self.shape)
                out[order[a:b]] = block[s[a:b] - lo]
        except OSError as e:
            raise fail(
                self.path, f"cannot be read ({e}); the file is damaged or truncated, download it again"
            ) from None
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
