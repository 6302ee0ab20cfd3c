"""``images/NNNNNN.tiff``: a dataset's images as one TIFF file each."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hfmed.sources.medimeta.info import Info
from hfmed.sources.medimeta.layout import fail, regular_file


class TiffImages:
    """``images/NNNNNN.tiff``, one file per image, for folders without ``images.hdf5``."""

    def __init__(self, folder: Path, info: Info, root: Path) -> None:
        self.folder = folder
        self.shape = info.image_shape
        self.mode = "L" if info.channels == 1 else "RGB"
        if not folder.resolve().is_relative_to(root.resolve()):
            raise fail(
                folder,
                f"is a link to {folder.resolve()}, outside the dataset folder {root}; only "
                "files inside the folder are read",
            )
        names = set()
        for e in os.scandir(folder):
            if e.name.endswith(".tiff"):
                if not e.is_file(follow_symlinks=False):  # links and odd files are checked one by one
                    regular_file(folder / e.name, root)
                names.add(e.name)
        missing = next((i for i in range(info.total) if self.name(i) not in names), None)
        if missing is not None:
            raise fail(
                folder / self.name(missing),
                f"missing; info.yaml declares {info.total} images (download the complete images/ folder)",
            )
        self.count = info.total
        if self.count:
            self.read(np.array([0]))  # shape and mode are checked up front on the first image

    @staticmethod
    def name(index: int) -> str:
        return f"{index:06d}.tiff"

    def read(self, indices: np.ndarray) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        out = np.empty((len(indices),) + self.shape, dtype=np.uint8)
        for j, i in enumerate(indices):
            path = self.folder / self.name(int(i))
            try:
                with Image.open(path) as im:
                    if im.mode != self.mode or im.size != (self.shape[1], self.shape[0]):
                        raise fail(
                            path,
                            f"is a {im.size[0]}x{im.size[1]} {im.mode} image, info.yaml declares "
                            f"{self.shape[1]}x{self.shape[0]} {self.mode}",
                        )
                    out[j] = np.asarray(im)
            except Image.DecompressionBombError as e:
                raise fail(
                    path,
                    f"declares an image far larger than {self.shape[1]}x{self.shape[0]} "
                    f"({' '.join(str(e).split())[:80]}); restore the original TIFF",
                ) from None
            except (OSError, UnidentifiedImageError) as e:
                raise fail(
                    path, f"not a readable TIFF image ({' '.join(str(e).split())}); download the images again"
                ) from None
        return out

    def close(self) -> None:
        pass
