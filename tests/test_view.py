"""`hfmed view`: what its HTTP API answers for real builds, and what it refuses to serve."""

from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from importlib import resources

import numpy as np
import pytest
from conftest import medmnist_arrays, write_npz
from hfmed.loading_scripts.medmnist import MedMNIST
from PIL import Image

from hfmed import view
from hfmed.cli import main
from hfmed.writer import build_config


@pytest.fixture(scope="module")
def server(built_medmnist):
    with view.start(built_medmnist).start_background() as v:
        yield v


@pytest.fixture
def copy_of_build(built_medmnist, tmp_path):
    """A private copy of the real build, for tests that damage it."""
    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    return out


def raw_get(viewer, path: str, host: str | None = None) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of `..` or `%2e`)."""
    conn = http.client.HTTPConnection("127.0.0.1", viewer.port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{viewer.port}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def get_json(viewer, path: str) -> tuple[int, dict]:
    status, body = raw_get(viewer, path)
    return status, json.loads(body)


def decode_image(cell: dict) -> np.ndarray:
    header, data = cell["src"].split(",", 1)
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


# --- what the page is told --------------------------------------------------------------------


def test_configs_are_the_cards_in_its_order_with_the_default(server):
    status, body = get_json(server, "/api/configs")
    assert status == 200
    assert [(c["name"], c["default"]) for c in body["configs"]] == [("adrenalmnist3d", False), ("breastmnist", True)]
    assert body["configs"][1]["splits"] == ["train", "validation", "test"]
    assert body["configs"][1]["rows"] == {"train": 546, "validation": 78, "test": 156}


def test_a_config_has_its_columns_row_counts_label_counts_and_card_section(server, real_breastmnist):
    arrays = np.load(real_breastmnist)
    status, info = get_json(server, "/api/config?config=breastmnist")
    assert status == 200
    assert [(s["name"], s["rows"]) for s in info["splits"]] == [("train", 546), ("validation", 78), ("test", 156)]
    assert [(c["name"], c["kind"]) for c in info["columns"]] == [("image", "image"), ("label", "class_label")]
    assert info["columns"][1]["names"] == ["malignant", "normal, benign"]
    for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
        expected = np.bincount(arrays[f"{key}_labels"].reshape(-1), minlength=2).tolist()
        assert info["labels"]["label"][split]["counts"] == expected
    assert info["card"].startswith("### BreastMNIST")
    assert "images/breastmnist.png" in info["card"] and "AdrenalMNIST3D" not in info["card"]
    assert info["page_rows"] == 100


def test_pages_of_100_rows_hold_the_source_images_and_named_labels(server, real_breastmnist):
    arrays = np.load(real_breastmnist)
    images, labels = arrays["train_images"], arrays["train_labels"].reshape(-1)
    status, page = get_json(server, "/api/rows?config=breastmnist&split=train&offset=0&length=1000")
    assert status == 200 and page["total"] == 546
    assert [r["row_idx"] for r in page["rows"]] == list(range(100))
    names = ["malignant", "normal, benign"]
    for r in page["rows"][:20]:
        assert np.array_equal(decode_image(r["cells"]["image"]), images[r["row_idx"]])
        assert r["cells"]["label"] == {"id": int(labels[r["row_idx"]]), "name": names[labels[r["row_idx"]]]}
    status, last = get_json(server, "/api/rows?config=breastmnist&split=train&offset=500")
    assert [r["row_idx"] for r in last["rows"]] == list(range(500, 546))


def test_filtering_by_label_gives_exactly_the_rows_of_that_class(server, real_breastmnist):
    labels = np.load(real_breastmnist)["test_labels"].reshape(-1)
    status, page = get_json(server, "/api/rows?config=breastmnist&split=test&label=label:0")
    assert status == 200
    assert page["total"] == int((labels == 0).sum())
    assert [r["row_idx"] for r in page["rows"]] == np.flatnonzero(labels == 0).tolist()
    assert {r["cells"]["label"]["name"] for r in page["rows"]} == {"malignant"}
    assert get_json(server, "/api/rows?config=breastmnist&split=test&label=nolabel:0")[0] == 400


def test_3d_rows_carry_the_preview_and_the_volume_comes_whole_on_request(server, real_adrenalmnist3d):
    arrays = np.load(real_adrenalmnist3d)
    status, info = get_json(server, "/api/config?config=adrenalmnist3d")
    assert [(c["name"], c["kind"], c["shape"]) for c in info["columns"]] == [
        ("label", "class_label", []),
        ("preview", "image", []),
        ("volume", "array3d", [28, 28, 28]),
    ]
    status, page = get_json(server, "/api/rows?config=adrenalmnist3d&split=validation&offset=90")
    assert [r["row_idx"] for r in page["rows"]] == list(range(90, 98))
    row = page["rows"][3]
    assert row["cells"]["volume"] == {"shape": [28, 28, 28]}
    assert decode_image(row["cells"]["preview"]).shape == (28, 84)
    for split, key, index in (("validation", "val", 93), ("train", "train", 1187)):
        status, body = raw_get(server, f"/api/volume?config=adrenalmnist3d&split={split}&row={index}&column=volume")
        assert status == 200 and body == arrays[f"{key}_images"][index].tobytes()
    assert raw_get(server, "/api/volume?config=adrenalmnist3d&split=train&row=1188&column=volume")[0] == 404
    assert raw_get(server, "/api/volume?config=breastmnist&split=train&row=0&column=image")[0] == 404


def test_lists_of_labels_are_named_counted_and_filtered(tmp_path):
    arrays = medmnist_arrays("chestmnist", n={"train": 4, "val": 1, "test": 1})
    arrays["train_labels"][:] = 0
    arrays["train_labels"][1, [2, 13]] = 1
    arrays["train_labels"][3, 2] = 1
    out = tmp_path / "medmnist"
    build_config(
        MedMNIST("chestmnist", write_npz(tmp_path / "chestmnist.npz", arrays), unofficial=True), out, progress=False
    )
    with view.start(out).start_background() as v:
        info = get_json(v, "/api/config?config=chestmnist")[1]
        train = info["labels"]["labels"]["train"]
        assert (
            train["empty"] == 2 and train["counts"][2] == 2 and train["counts"][13] == 1 and sum(train["counts"]) == 3
        )
        page = get_json(v, "/api/rows?config=chestmnist&split=train")[1]
        assert [[x["name"] for x in r["cells"]["labels"]] for r in page["rows"]] == [
            [],
            ["effusion", "hernia"],
            [],
            ["effusion"],
        ]
        assert [
            r["row_idx"] for r in get_json(v, "/api/rows?config=chestmnist&split=train&label=labels:2")[1]["rows"]
        ] == [1, 3]
        assert [
            r["row_idx"] for r in get_json(v, "/api/rows?config=chestmnist&split=train&label=labels:-1")[1]["rows"]
        ] == [0, 2]


def test_a_medimeta_build_shows_every_task_column_and_its_own_card_section(tmp_path):
    from conftest import MEDIMETA_INFO
    from medimeta_fixtures import make_medimeta_folder

    make_medimeta_folder(tmp_path / "src", MEDIMETA_INFO / "cxr.yaml", tiff=False)
    assert (
        main(
            [
                "build",
                "medimeta",
                "cxr",
                "--source",
                str(tmp_path / "src"),
                "--out",
                str(tmp_path / "medimeta"),
                "--quiet",
            ]
        )
        == 0
    )
    with view.start(tmp_path / "medimeta").start_background() as v:
        info = get_json(v, "/api/config?config=cxr")[1]
        kinds = {c["name"]: c["kind"] for c in info["columns"]}
        assert kinds == {
            "image": "image",
            "disease_labels": "label_list",
            "patient_sex": "class_label",
            "patient_id": "value",
        }
        assert info["card"].startswith("### cxr")
        row = get_json(v, "/api/rows?config=cxr&split=train&length=1")[1]["rows"][0]["cells"]
        assert decode_image(row["image"]).shape == (224, 224) and isinstance(row["patient_id"], str)


# --- what it refuses ----------------------------------------------------------------------------


def test_nothing_outside_the_build_folder_is_served(copy_of_build, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    (copy_of_build / "images" / "link.png").symlink_to(secret)
    with view.start(copy_of_build).start_background() as v:
        status, body = raw_get(v, "/files/images/breastmnist.png")
        assert status == 200 and body == (copy_of_build / "images" / "breastmnist.png").read_bytes()
        for path in (
            "/files/../secret.png",
            "/files/images/../../secret.png",
            "/files/%2e%2e/secret.png",
            "/files/%2E%2E%2Fsecret.png",
            "/files/images/%2e%2e%2f%2e%2e%2fsecret.png",
            f"/files/{secret}",
            f"/files//{secret}",
            "/files/images/link.png",
            "/files/..%5csecret.png",
            "/static/../server.py",
            "/static/%2e%2e/server.py",
            "/files/README.md",
            "/../secret.png",
        ):
            status, body = raw_get(v, path)
            assert status == 404, path
            assert b"SECRET" not in body and b"import" not in body, path


def test_a_shard_linked_from_outside_is_refused_for_its_config_only(copy_of_build, tmp_path):
    shard = copy_of_build / "breastmnist" / "train-00000-of-00001.parquet"
    outside = tmp_path / "elsewhere.parquet"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    with view.start(copy_of_build).start_background() as v:
        status, body = get_json(v, "/api/config?config=breastmnist")
        assert status == 500 and "outside the build folder" in body["error"]
        assert get_json(v, "/api/config?config=adrenalmnist3d")[0] == 200


def test_a_broken_shard_spoils_its_config_and_nothing_else(copy_of_build):
    shard = copy_of_build / "breastmnist" / "test-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with view.start(copy_of_build).start_background() as v:
        assert get_json(v, "/api/configs")[0] == 200
        status, body = get_json(v, "/api/config?config=breastmnist")
        assert status == 500
        assert "breastmnist/test-00000-of-00001.parquet" in body["error"] and "--overwrite" in body["error"]
        assert get_json(v, "/api/rows?config=breastmnist&split=train")[0] == 200
        assert get_json(v, "/api/rows?config=adrenalmnist3d&split=test")[0] == 200


def test_a_folder_without_a_card_shows_a_config_per_folder_of_shards(copy_of_build):
    (copy_of_build / "README.md").unlink()
    with view.start(copy_of_build).start_background() as v:
        assert [c["name"] for c in get_json(v, "/api/configs")[1]["configs"]] == ["adrenalmnist3d", "breastmnist"]
        info = get_json(v, "/api/config?config=adrenalmnist3d")[1]
        assert [(c["name"], c["kind"]) for c in info["columns"]] == [
            ("label", "class_label"),
            ("preview", "image"),
            ("volume", "array3d"),
        ]
        assert info["columns"][0]["names"] == ["normal", "hyperplasia"] and info["card"] == ""
        assert [s["name"] for s in info["splits"]] == ["train", "validation", "test"]


def test_changed_shards_show_at_once(copy_of_build):
    with view.start(copy_of_build).start_background() as v:
        assert get_json(v, "/api/rows?config=breastmnist&split=train")[1]["total"] == 546
        folder = copy_of_build / "breastmnist"
        shutil.copy(folder / "validation-00000-of-00001.parquet", folder / "train-00000-of-00001.parquet")
        assert get_json(v, "/api/rows?config=breastmnist&split=train")[1]["total"] == 78


def test_requests_not_addressed_to_localhost_are_refused(server):
    assert raw_get(server, "/api/configs", host="attacker.example:80")[0] == 403
    assert raw_get(server, "/api/configs", host=f"localhost:{server.port}")[0] == 200
    assert server.httpd.server_address[0] == "127.0.0.1"


def test_unknown_names_are_404_and_bad_numbers_400(server):
    assert get_json(server, "/api/config?config=nosuch")[0] == 404
    assert get_json(server, "/api/rows?config=breastmnist&split=nosuch")[0] == 404
    assert get_json(server, "/api/rows?config=breastmnist&split=train&offset=x")[0] == 400
    assert get_json(server, "/api/nothing")[0] == 404


def test_the_page_ships_in_the_package_and_loads_nothing_from_the_network(server):
    for name in ("index.html", "app.js", "style.css"):
        text = resources.files("hfmed.view").joinpath("static", name).read_text()
        assert "://" not in text, name
    status, body = raw_get(server, "/")
    assert status == 200 and b'<script src="/static/app.js">' in body
    assert raw_get(server, "/static/app.js")[0] == 200
    with urllib.request.urlopen(server.url(), timeout=30) as r:
        policy = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "connect-src 'self';" in policy


# --- the command --------------------------------------------------------------------------------


def _as_in_a_terminal() -> None:
    """Ctrl-C's signal as a terminal delivers it: a test run started in the background (a CI job
    behind `&`) inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_view_serves_until_ctrl_c_and_stops_cleanly(built_medmnist):
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfmed.cli", "view", str(built_medmnist), "--config", "breastmnist"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_in_a_terminal,
    )
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/#config=breastmnist")
        with urllib.request.urlopen(url.split("#")[0] + "api/configs", timeout=30) as r:
            assert json.load(r)["configs"][0]["name"] == "adrenalmnist3d"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "hfmed view: stopped"
    with pytest.raises(OSError):
        urllib.request.urlopen(url.split("#")[0] + "api/configs", timeout=5)


def test_view_errors_are_one_line(built_medmnist, tmp_path, capsys):
    assert main(["view", str(tmp_path / "nothing")]) == 2
    assert "no such build folder" in capsys.readouterr().err
    assert main(["view", str(built_medmnist), "--config", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adrenalmnist3d, breastmnist" in err[0]
    with view.start(built_medmnist) as busy:
        assert main(["view", str(built_medmnist), "--port", str(busy.port)]) == 2
        assert "choose another --port" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty")]) == 2
    assert "holds no config" in capsys.readouterr().err
