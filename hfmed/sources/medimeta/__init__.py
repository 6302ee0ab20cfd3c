"""Reader for MedIMeta dataset folders, in the official layout of Zenodo record 7884735.

A dataset folder describes itself: ``info.yaml`` names its tasks, label keys and split sizes, and
everything else (``images.hdf5`` or ``images/NNNNNN.tiff``, ``task_labels/<task>.npy``,
``splits/``, ``original_splits/``, ``annotations.csv``) is read and checked against it. No dataset
needs code of its own, so a new folder in the same layout reads without a change here.

The folder is untrusted input: YAML goes through a safe loader without aliases and with bounded
text, ``.npy`` files are opened without pickle, no name found in a file is allowed to make a path
outside the folder, and every file read is a regular file that resolves inside the folder (no
symlink, HDF5 external storage, virtual dataset or external link reaches anything else). Everything is
checked before the first row is handed out, so a build either completes or fails with one line.

Images are read in windows of the split's own order (split files need not be sorted): each window
is fetched as a few contiguous HDF5 slices in index order and then put back in file order, so
memory stays at a few windows of pixels however large the dataset is.
"""

from hfmed.sources.medimeta.folder import MedIMetaFolder
from hfmed.sources.medimeta.hdf5 import Hdf5Images, read_runs
from hfmed.sources.medimeta.info import Info, Task, is_dataset_id, license_id, parse_info, snake_case, summarize
from hfmed.sources.medimeta.layout import INFO_FILE, SPLIT_FILES, SPLIT_KINDS, regular_file
from hfmed.sources.medimeta.tiff import TiffImages

__all__ = [
    "INFO_FILE",
    "SPLIT_FILES",
    "SPLIT_KINDS",
    "Hdf5Images",
    "Info",
    "MedIMetaFolder",
    "Task",
    "TiffImages",
    "is_dataset_id",
    "license_id",
    "parse_info",
    "read_runs",
    "regular_file",
    "snake_case",
    "summarize",
]
