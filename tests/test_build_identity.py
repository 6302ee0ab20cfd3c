"""Byte-identical builds stay byte-identical: the real BreastMNIST and AdrenalMNIST3D, built through
the command line, give exactly the files recorded here.

The digests were recorded from the code before the collection registry and packaging moved
(issue 17). A change to them is a change to every published build; it must be deliberate and
announced, never a side effect of moving code.
"""

from __future__ import annotations

import hashlib

from conftest import REAL_MEDMNIST

from hfmed.cli import main

SHARD = "-00000-of-00001.parquet"  # one shard per split
RECORDED = {
    "README.md": "039749b09cf54a0af9701abd498232c3257e5b23229fe99e69d652a55c3c5ee0",
    "adrenalmnist3d/test" + SHARD: "42bb75cd102753eb0b1dbdb6f3e6cbeda95c56e3715a2d7ed068f97af34f4271",
    "adrenalmnist3d/train" + SHARD: "67d096b72a2e27fd35654cbd72a449dd44d82079137d4283fbc20fb9b3361c05",
    "adrenalmnist3d/validation" + SHARD: "ec2542dba1527e8784780dad04a7caf4363bf8a3a2dbdb6487bfcf89434dcc0b",
    "breastmnist/test" + SHARD: "60c691302c96661a8e01b6b6249aefe1024d2d496f7101e20e5f8f5532c5a780",
    "breastmnist/train" + SHARD: "ab0c56d241867be4ef433db2bedc4d85d064bcf34dcd85baf8c12a0c164708b8",
    "breastmnist/validation" + SHARD: "7ccbc6a2bac61aa5f957ad982dd41ee800ee81c9c8112511c77bbe2f9d1141c0",
    "images/adrenalmnist3d.png": "37b8e093cdf25b874e3ae465eaccbcf179698f1c611a02d78acaacd065bd72c3",
    "images/breastmnist.png": "466a5f39a5d04092aedcc70a1c92c6595947e983db71ac3b2722e6ab7e2674ef",
}


def test_real_builds_are_byte_identical_to_the_recorded_ones(tmp_path):
    out = tmp_path / "medmnist"
    argv = ["build", "medmnist", "breastmnist", "adrenalmnist3d", "--source", str(REAL_MEDMNIST), "--out", str(out)]
    assert main([*argv, "--quiet", "--threads", "1"]) == 0
    found = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }
    assert found == RECORDED
