"""Nothing a user owns is read, replaced or removed without asking; every fault is one line.

Each case crafts its input here (small), runs the command, and asserts the exit code, exactly one
line on stderr, the output folder as it was before (or the complete config), and the inputs
unchanged (checksums before and after). The cases are the table of issue 15.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import MEDIMETA_INFO, make_medmnist_npz, medmnist_arrays, write_npz
from medimeta_fixtures import make_medimeta_folder

from hfmed.cli import main

N = {"train": 12, "val": 5, "test": 6}


def checksums(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links not followed): files by content, links by target."""
    if not folder.exists() and not folder.is_symlink():
        return {}
    if not folder.is_dir():
        return {".": hashlib.md5(folder.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.md5(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = "special"
    return out


def run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def refused(capsys, expect: str, *argv, inputs: list[Path] = (), out: Path | None = None) -> str:
    """Run a command that must fail with exit 2 and one line, leaving inputs and --out as they were."""
    before = [checksums(p) for p in inputs]
    out_before = checksums(out) if out is not None else None
    rc, err = run(capsys, *argv)
    assert rc == 2, err
    assert err.startswith("hfmed: error: ") and err.count("\n") == 1, err
    assert expect in err, err
    assert [checksums(p) for p in inputs] == before
    if out is not None:
        assert checksums(out) == out_before
    return err


@pytest.fixture
def npz(tmp_path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    return make_medmnist_npz(folder, "breastmnist", n=N)


@pytest.fixture
def bus(tmp_path) -> Path:
    """A MedIMeta source folder holding bus/ (7 images, HDF5 and TIFF)."""
    root = tmp_path / "medimeta"
    make_medimeta_folder(root, MEDIMETA_INFO / "bus.yaml", seed=5)
    return root


def build_argv(source: Path, out: Path) -> tuple:
    """The command line that builds the BreastMNIST test file into ``out``."""
    return ("build", "medmnist", "breastmnist", "--source", source, "--out", out, "--unofficial", "--quiet")


def build_npz(capsys, source: Path, out: Path, *extra) -> tuple[int, str]:
    return run(capsys, *build_argv(source, out), *extra)


# --- 1. a source never pulls in a file from outside what the user named ---------------------------


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.env"
    secret.write_bytes(b"HF_TOKEN=hf_secret" * 200_000)  # enough bytes for every image of bus
    return secret


def _external_storage(bus: Path, secret: Path) -> None:
    p = bus / "bus" / "images.hdf5"
    n = h5py.File(p, "r")["images"].shape
    p.unlink()
    with h5py.File(p, "w") as f:
        f.create_dataset("images", shape=n, dtype=np.uint8, external=[(str(secret), 0, int(np.prod(n)))])


def _virtual(bus: Path, secret: Path) -> None:
    p = bus / "bus" / "images.hdf5"
    other = secret.with_suffix(".hdf5")
    shutil.copy(p, other)
    n = h5py.File(p, "r")["images"].shape
    p.unlink()
    layout = h5py.VirtualLayout(shape=n, dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(other), "images", shape=n)
    with h5py.File(p, "w") as f:
        f.create_virtual_dataset("images", layout)


def _external_link(bus: Path, secret: Path) -> None:
    p = bus / "bus" / "images.hdf5"
    other = secret.with_suffix(".hdf5")
    shutil.copy(p, other)
    p.unlink()
    with h5py.File(p, "w") as f:
        f["images"] = h5py.ExternalLink(str(other), "images")


def _link_out(bus: Path, secret: Path, rel: str) -> None:
    p = bus / "bus" / rel
    outside = secret.parent / ("outside-" + p.name)
    shutil.move(p, outside)
    p.symlink_to(outside)


LEAKS = {
    "HDF5 external storage": (_external_storage, "uses external storage"),
    "HDF5 virtual dataset": (_virtual, "uses a virtual dataset"),
    "HDF5 external link": (_external_link, "is a ExternalLink to another place"),
    "images.hdf5 symlinked outside": (lambda b, s: _link_out(b, s, "images.hdf5"), "outside the dataset folder"),
    "labels symlinked outside": (
        lambda b, s: _link_out(b, s, "task_labels/malignancy.npy"),
        "outside the dataset folder",
    ),
    "split file symlinked outside": (lambda b, s: _link_out(b, s, "splits/train.txt"), "outside the dataset folder"),
    "info.yaml symlinked outside": (lambda b, s: _link_out(b, s, "info.yaml"), "outside the dataset folder"),
    "annotations symlinked outside": (lambda b, s: _link_out(b, s, "annotations.csv"), "outside the dataset folder"),
    "a TIFF symlinked outside": (
        lambda b, s: ((b / "bus" / "images.hdf5").unlink(), _link_out(b, s, "images/000002.tiff")),
        "outside the dataset folder",
    ),
    "info.yaml is a FIFO": (
        lambda b, s: ((b / "bus" / "info.yaml").unlink(), os.mkfifo(b / "bus" / "info.yaml")),
        "not a regular file",
    ),
}


@pytest.mark.parametrize("case", list(LEAKS))
def test_a_medimeta_folder_cannot_pull_in_a_file_from_outside(bus, tmp_path, capsys, case):
    secret = _secret(tmp_path)
    make, expect = LEAKS[case]
    make(bus, secret)
    out = tmp_path / "out"
    refused(
        capsys,
        expect,
        "build",
        "medimeta",
        "bus",
        "--source",
        bus,
        "--out",
        out,
        "--quiet",
        inputs=[bus, secret],
        out=out,
    )


def test_a_symlink_that_stays_inside_the_dataset_folder_is_read(bus, tmp_path, capsys):
    d = bus / "bus"
    (d / "data").mkdir()
    shutil.move(d / "images.hdf5", d / "data" / "images.hdf5")
    (d / "images.hdf5").symlink_to(Path("data") / "images.hdf5")
    rc, err = run(capsys, "build", "medimeta", "bus", "--source", bus, "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_source_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, capsys, kind):
    if kind == "device":
        source = Path("/dev/zero")
    else:
        source = tmp_path / "breastmnist.npz"
        os.mkfifo(source)  # opening it would block forever
    out = tmp_path / "out"
    refused(
        capsys,
        "is not a regular file",
        "build",
        "medmnist",
        "breastmnist",
        "--source",
        source,
        "--out",
        out,
        "--quiet",
        out=out,
    )


# --- 2. --out never overlaps a source ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(lambda s: ["bus", "--source", s, "--out", s, "--overwrite"], id="out is the source, --overwrite"),
        pytest.param(lambda s: ["--all", "--source", s, "--out", s], id="--all with out equal to the source"),
        pytest.param(lambda s: ["bus", "--source", s / "bus", "--out", s], id="out contains the dataset folder"),
        pytest.param(lambda s: ["bus", "--source", s, "--out", s / "bus" / "built"], id="out inside the source"),
    ],
)
def test_an_out_that_overlaps_a_medimeta_source_is_refused(bus, capsys, args):
    refused(capsys, "source", "build", "medimeta", *args(bus), "--quiet", inputs=[bus])


def test_an_out_that_is_the_medmnist_source_folder_is_refused(npz, capsys):
    refused(
        capsys,
        "is the source",
        "build",
        "medmnist",
        "breastmnist",
        "--source",
        npz.parent,
        "--out",
        npz.parent,
        "--unofficial",
        inputs=[npz.parent],
    )


def test_a_source_file_inside_out_is_left_alone(npz, tmp_path, capsys):
    proj = npz.parent
    rc, err = build_npz(capsys, npz, proj)
    assert rc == 0, err
    assert (proj / "breastmnist.npz").read_bytes() == npz.read_bytes()


# --- 3. hfmed replaces and removes only what it wrote ----------------------------------------------


def _user_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 77).save(path)


def test_a_users_readme_and_pictures_are_never_replaced(npz, tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "README.md").write_text("# my project\n")
    _user_png(proj / "images" / "scan_001.png")
    refused(
        capsys,
        "README.md: a README.md that hfmed did not write",
        *build_argv(npz, proj),
        inputs=[npz],
        out=proj,
    )


def test_a_users_pictures_beside_a_build_stay(npz, tmp_path, capsys):
    proj = tmp_path / "proj"
    _user_png(proj / "images" / "scan_001.png")
    mine = (proj / "images" / "scan_001.png").read_bytes()
    for extra in ([], ["--overwrite"]):
        rc, err = build_npz(capsys, npz, proj, *extra)
        assert rc == 0, err
        assert (proj / "images" / "scan_001.png").read_bytes() == mine
    assert (proj / "images" / "breastmnist.png").is_file()


def test_a_montage_path_holding_a_users_file_is_refused(npz, tmp_path, capsys):
    proj = tmp_path / "proj"
    _user_png(proj / "images" / "breastmnist.png")
    refused(
        capsys,
        "an images/ file that hfmed did not write",
        *build_argv(npz, proj),
        inputs=[npz],
        out=proj,
    )


def test_a_users_folder_named_as_the_config_is_never_replaced(npz, tmp_path, capsys):
    proj = tmp_path / "proj"
    (proj / "breastmnist").mkdir(parents=True)
    (proj / "breastmnist" / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        refused(
            capsys,
            "holding files other than hfmed shards",
            *build_argv(npz, proj),
            *extra,
            inputs=[npz],
            out=proj,
        )


def test_a_users_own_parquet_folder_is_not_taken_for_a_config(npz, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    proj = tmp_path / "proj"
    (proj / "mine").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), proj / "mine" / "train-00000-of-00001.parquet")
    before = checksums(proj / "mine")
    rc, err = build_npz(capsys, npz, proj)
    assert rc == 0, err
    assert checksums(proj / "mine") == before
    assert "config_name: mine" not in (proj / "README.md").read_text()


# --- 4-6. reruns complete, concurrent builds do not collide, collections do not mix ----------------


def test_a_placed_config_without_its_card_is_completed_by_a_rerun(npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert build_npz(capsys, npz, out)[0] == 0
    card = (out / "README.md").read_bytes()
    (out / "README.md").unlink()
    dead = _dead_pid()
    (out / f".README.md.{dead}.tmp").write_text("half")
    (out / f".notes.txt.{dead}.tmp").write_text("the user's own")  # named alike, but not hfmed's
    rc, err = build_npz(capsys, npz, out)
    assert rc == 0, err
    assert (out / "README.md").read_bytes() == card
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [f".notes.txt.{dead}.tmp"]
    assert (out / f".notes.txt.{dead}.tmp").read_text() == "the user's own"
    rc, err = build_npz(capsys, npz, out)  # now complete: the usual refusal
    assert rc == 2 and "already exists" in err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_build_refuses_while_another_holds_the_config(npz, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from hfmed import outdir\n"
            "with outdir.locked(Path(sys.argv[1]), 'breastmnist', wait=False):\n    "
            "print('held', flush=True); sys.stdin.read()",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        live = out / f".hfmed-tmp-breastmnist-{holder.pid}"  # the other build's working folder
        live.mkdir()
        (live / "train-00000-of-00001.parquet").write_bytes(b"being written")
        refused(
            capsys,
            "another hfmed process is building breastmnist",
            *build_argv(npz, out),
            inputs=[npz],
            out=out,
        )
        rc, err = run(
            capsys,
            "build",
            "medmnist",
            "pneumoniamnist",
            "--source",
            make_medmnist_npz(npz.parent, "pneumoniamnist", n=N),
            "--out",
            out,
            "--unofficial",
            "--quiet",
        )
        assert rc == 0, err
        assert live.is_dir()  # a live process's folder is never removed
    finally:
        holder.communicate("")
    rc, err = build_npz(capsys, npz, out)
    assert rc == 0, err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the dead one's leftovers are gone


def test_mixing_collections_is_refused_before_anything_is_written(npz, bus, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run(capsys, "build", "medimeta", "bus", "--source", bus, "--out", out, "--quiet")
    assert rc == 0, err
    refused(
        capsys,
        "holds a medimeta build",
        *build_argv(npz, out),
        inputs=[npz],
        out=out,
    )


# --- 8-9. one line, not a traceback ---------------------------------------------------------------


def _npy_with_header(header: bytes, version: int = 1, data: bytes = b"") -> bytes:
    fmt = "<H" if version == 1 else "<I"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(fmt, len(header)) + header + data


def _npz_with_member(path: Path, name: str, raw: bytes) -> Path:
    """A MedMNIST-shaped archive with ``raw`` in place of one member."""
    arrays = medmnist_arrays("breastmnist", n=N)
    members = {k + ".npy": io.BytesIO() for k in arrays}
    for k, buf in members.items():
        np.save(buf, arrays[k[:-4]], allow_pickle=False)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for k, buf in members.items():
            z.writestr(k, raw if k == name else buf.getvalue())
    return path


def _patch_zip(path: Path, name: str, *, method: int | None = None, encrypted: bool = False) -> None:
    """Mark one member as encrypted or compressed with an unknown method, in both of its headers."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for sig, flag_at, method_at, name_at in ((b"PK\x03\x04", 6, 8, 30), (b"PK\x01\x02", 8, 10, 46)):
        pos = data.find(sig)
        while pos >= 0:
            name_len = struct.unpack_from("<H", data, pos + (26 if sig == b"PK\x03\x04" else 28))[0]
            if bytes(data[pos + name_at : pos + name_at + name_len]) == encoded:
                if encrypted:
                    data[pos + flag_at] |= 1
                if method is not None:
                    struct.pack_into("<H", data, pos + method_at, method)
            pos = data.find(sig, pos + 4)
    path.write_bytes(bytes(data))


def _bomb_tiff(path: Path, side: int = 40000) -> None:
    """A grayscale TIFF that declares side x side pixels and holds a few bytes."""
    tags = [
        (256, 4, side),
        (257, 4, side),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, side),
        (279, 4, 16),
    ]
    ifd_at = 8 + 16
    body = b"II*\x00" + struct.pack("<I", ifd_at) + bytes(16)
    body += (
        struct.pack("<H", len(tags))
        + b"".join(
            struct.pack("<HHII", t, typ, 1, v) if typ == 4 else struct.pack("<HHIHH", t, typ, 1, v, 0)
            for t, typ, v in tags
        )
        + struct.pack("<I", 0)
    )
    path.write_bytes(body)


NPZ_FAULTS = {
    "a 2 GB .npy header": (
        lambda p: _npz_with_member(
            p, "train_images.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 << 30) + b"{'descr'"
        ),
        "over numpy's 10,000-byte limit",
    ),
    "a 30 MB .npy header": (
        lambda p: _npz_with_member(p, "train_images.npy", _npy_with_header(b" " * (30 << 20), version=2)),
        "over numpy's 10,000-byte limit",
    ),
    "5,000 unary signs": (
        lambda p: _npz_with_member(
            p,
            "train_labels.npy",
            _npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': (" + b"-" * 5000 + b"1,)}"),
        ),
        "unreadable .npy header",
    ),
    "a float shape": (
        lambda p: _npz_with_member(
            p, "train_labels.npy", _npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': (12.0, 1)}")
        ),
        "unreadable .npy header",
    ),
    "a string shape": (
        lambda p: _npz_with_member(
            p, "train_labels.npy", _npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': ('12', 1)}")
        ),
        "unreadable .npy header",
    ),
    "a complex shape": (
        lambda p: _npz_with_member(
            p, "train_labels.npy", _npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': (12j, 1)}")
        ),
        "unreadable .npy header",
    ),
    "a negative row count": (
        lambda p: _npz_with_member(
            p, "val_labels.npy", _npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': (-5, 1)}")
        ),
        "negative size",
    ),
    "a shape larger than the data": (
        lambda p: _npz_with_member(
            p,
            "val_labels.npy",
            _npy_with_header(b"{'descr': '|u1', 'fortran_order': False, 'shape': (500, 1)}", data=bytes(5)),
        ),
        "holds 5 bytes of data",
    ),
    "an encrypted member": (
        lambda p: (
            write_npz(p, medmnist_arrays("breastmnist", n=N)),
            _patch_zip(p, "train_images.npy", encrypted=True),
        ),
        "is encrypted",
    ),
    "an unsupported compression": (
        lambda p: (write_npz(p, medmnist_arrays("breastmnist", n=N)), _patch_zip(p, "train_images.npy", method=97)),
        "compression",
    ),
}


@pytest.mark.parametrize("case", list(NPZ_FAULTS))
def test_a_crafted_npz_is_one_line(tmp_path, capsys, case):
    make, expect = NPZ_FAULTS[case]
    source = tmp_path / "breastmnist.npz"
    make(source)
    out = tmp_path / "out"
    refused(
        capsys,
        expect,
        *build_argv(source, out),
        inputs=[source],
        out=out,
    )


def _alias_bomb(bus: Path) -> None:
    info = bus / "bus" / "info.yaml"
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i, (x, y) in enumerate(zip("bcdefgh", "abcdefg")):
        bomb += f"{x}: &{x} [{', '.join(['*' + y] * 9)}]\n"
    info.write_text(info.read_text().replace("summary:", bomb + "summary: *h\nsummary_was:", 1))


def _large_header_labels(bus: Path) -> None:
    p = bus / "bus" / "task_labels" / "malignancy.npy"
    p.write_bytes(
        _npy_with_header(
            b"{'descr': '<i8', 'fortran_order': False, 'shape': (7,)}" + b" " * 20_000 + b"\n", data=bytes(56)
        )
    )


MEDIMETA_FAULTS = {
    "a YAML alias bomb": (_alias_bomb, "uses YAML aliases"),
    "a text field of 1 MB": (
        lambda b: (b / "bus" / "info.yaml").write_text(
            (b / "bus" / "info.yaml").read_text().replace("summary:", "summary: " + "x" * 500_000 + "\nsummary_was:", 1)
        ),
        "text field of 500,000 characters",
    ),
    "a labels .npy with a large header": (_large_header_labels, "malignancy.npy: not a plain numeric .npy array"),
    "a TIFF declaring 40000x40000": (
        lambda b: ((b / "bus" / "images.hdf5").unlink(), _bomb_tiff(b / "bus" / "images" / "000000.tiff")),
        "declares an image far larger",
    ),
}


@pytest.mark.parametrize("case", list(MEDIMETA_FAULTS))
def test_a_crafted_medimeta_folder_is_one_line(bus, tmp_path, capsys, case):
    make, expect = MEDIMETA_FAULTS[case]
    make(bus)
    out = tmp_path / "out"
    refused(capsys, expect, "build", "medimeta", "bus", "--source", bus, "--out", out, "--quiet", inputs=[bus], out=out)


def test_a_dataset_named_readme_cannot_become_a_config(bus, tmp_path, capsys):
    info = bus / "bus" / "info.yaml"
    info.write_text(info.read_text().replace("id: bus", "id: README.md", 1))
    (bus / "bus").rename(bus / "README.md")
    out = tmp_path / "out"
    refused(
        capsys,
        "cannot be a config",
        "build",
        "medimeta",
        "README.md",
        "--source",
        bus,
        "--out",
        out,
        "--quiet",
        inputs=[bus],
        out=out,
    )


def test_a_full_disk_is_one_line_and_leaves_nothing(npz, tmp_path):
    """A real write failure: the build runs under a file-size limit, as on a full disk."""
    out = tmp_path / "out"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from hfmed.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    before = checksums(npz)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            *build_argv(str(npz), str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.startswith(f"hfmed: error: cannot write into {out} (File too large)")
        and done.stderr.count("\n") == 1
    ), done.stderr
    assert not out.exists()
    assert checksums(npz) == before


def test_a_read_only_out_is_one_line(npz, tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "out"
    real_mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self == out or out in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    refused(
        capsys,
        f"cannot write into {out} (Read-only file system)",
        *build_argv(npz, out),
        inputs=[npz],
        out=out,
    )


def test_a_symlinked_shard_is_one_problem_in_check_and_never_pushed(npz, tmp_path, capsys):
    from hfmed.hub import check

    out = tmp_path / "out"
    assert build_npz(capsys, npz, out)[0] == 0
    shard = next((out / "breastmnist").glob("test-*.parquet"))
    outside = tmp_path / "elsewhere.parquet"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    rc, err = run(capsys, "check", out)
    assert rc == 1 and "Traceback" not in err
    report = check(out, stream=False)
    assert [p for p in report.problems if "symbolic link" in p] == [
        f"{shard.relative_to(out)}: is a symbolic link to {outside}; a dataset holds "
        "the files themselves (push would upload what the link points to), replace it "
        "with the file"
    ]
    assert shard.relative_to(out) not in report.files


def test_a_non_ascii_token_is_one_line_and_never_printed(npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert build_npz(capsys, npz, out)[0] == 0
    token = "hf_sécret\u200btoken"
    rc, err = run(capsys, "push", out, "--repo", "me/medmnist", "--token", token)
    assert rc == 2 and err.count("\n") == 1 and "holds characters no token has" in err, err
    assert "sécret" not in err and "token\u200b" not in err


def test_a_build_of_an_earlier_version_is_rebuilt_in_place(npz, tmp_path, capsys):
    """A card and montage written before the ownership marks still count as hfmed's own."""
    import re

    from PIL import Image

    out = tmp_path / "out"
    assert build_npz(capsys, npz, out)[0] == 0
    card = out / "README.md"
    card.write_text(
        re.sub(r"hfmed:\n  collection: medmnist\n", "", card.read_text())
    )  # as the earlier version wrote it
    picture = out / "images" / "breastmnist.png"
    with Image.open(picture) as im:
        im.load()
        im.save(picture, format="PNG")  # no text chunk, as the earlier version wrote it
    rc, err = build_npz(capsys, npz, out, "--overwrite")
    assert rc == 0, err
    assert "hfmed:\n  collection: medmnist" in card.read_text()
    with Image.open(picture) as im:
        assert im.info.get("Software") == "hfmed"
