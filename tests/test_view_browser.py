"""`hfmed view` in a real browser: headless Chromium driven over the DevTools protocol.

Skipped, with the reason, where Chromium or the `websockets` package is missing (`.ci/run` installs
Chromium with apt-get when it can). Pictures are checked in screenshots against the source arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from cdp import Browser, find_chromium

from hfmed import view

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): browser tests skipped"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("websockets", reason="the `websockets` package (test extras) drives the browser")
    b = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def server(built_medmnist):
    with view.start(built_medmnist).start_background() as v:
        yield v


def crop(shot, rect) -> np.ndarray:
    x, y = round(rect["x"]), round(rect["y"])
    return np.asarray(
        shot.crop((x, y, x + round(rect["width"]), y + round(rect["height"]))).convert("L"), dtype=np.int16
    )


def block_centres(picture: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The pixel at the centre of each of rows x cols equal blocks: the source pixels of a scaled-up drawing."""
    h, w = picture.shape
    ys = ((np.arange(rows) + 0.5) * h / rows).astype(int)
    xs = ((np.arange(cols) + 0.5) * w / cols).astype(int)
    return picture[np.ix_(ys, xs)]


def test_a_2d_page_shows_the_images_label_names_and_counts(browser, server, real_breastmnist, tmp_path):
    arrays = np.load(real_breastmnist)
    images, labels = arrays["train_images"], arrays["train_labels"].reshape(-1)
    browser.open(server.url("breastmnist"))
    assert browser.wait_for(
        "document.querySelectorAll('#rows tbody tr').length === 100"
        " && [...document.querySelectorAll('img.thumb')].every((i) => i.complete && i.naturalWidth === 28)"
    )
    names = ["malignant", "normal, benign"]
    shown = browser.evaluate(
        "[...document.querySelectorAll('#rows tbody tr .label')].slice(0, 10).map((s) => s.firstChild.textContent)"
    )
    assert shown == [names[k] for k in labels[:10]]
    assert browser.evaluate("document.getElementById('range').textContent") == "rows 1–100 of 546"
    assert 'split="train[0:100]"' in browser.evaluate("document.getElementById('loadcode').textContent")
    chart = browser.evaluate("document.getElementById('chart').innerText")
    assert "malignant" in chart and "399" in chart and "147" in chart

    shot = browser.screenshot()
    shot.save(tmp_path / "breastmnist.png")
    r = browser.rect("#chart")
    bars = np.asarray(
        shot.crop((round(r["x"]), round(r["y"]), round(r["x"] + r["width"]), round(r["y"] + r["height"]))),
        dtype=np.int16,
    )
    for colour in (
        (0x4C, 0x78, 0xA8),
        (0xF5, 0x85, 0x18),
        (0x54, 0xA2, 0x4B),
    ):  # train, validation, test bars are drawn
        assert (np.abs(bars - colour).sum(axis=2) < 10).sum() > 50, colour
    for i in (0, 4, 99):  # row 4 is malignant: both classes' rows drawn
        browser.scroll_into_view(f"#rows tbody tr:nth-child({i + 1})")
        shot = browser.screenshot()
        drawn = block_centres(crop(shot, browser.rect(f"#rows tbody tr:nth-child({i + 1}) img.thumb")), 28, 28)
        assert np.corrcoef(drawn.ravel(), images[i].ravel())[0, 1] > 0.99
        label_chip = crop(shot, browser.rect(f"#rows tbody tr:nth-child({i + 1}) .label"))
        assert label_chip.std() > 10  # text is drawn in the chip


def test_the_slice_scrubber_moves_through_the_real_volume(browser, server, real_adrenalmnist3d, tmp_path):
    volume = np.load(real_adrenalmnist3d)["train_images"][3]
    browser.open(server.url() + "#config=adrenalmnist3d&split=train&row=3")
    assert browser.wait_for("document.getElementById('sliceinfo').textContent === 'slice 14 of 27'")
    browser.scroll_into_view("#volume")

    def canvas() -> np.ndarray:
        return block_centres(crop(browser.screenshot(), browser.rect("#canvas")), 28, 28)

    before = canvas()
    assert np.array_equal(before, volume[14])
    slider = browser.rect("#slice")
    y = slider["y"] + slider["height"] / 2
    browser.drag(slider["x"] + slider["width"] * 14 / 27, y, slider["x"] + slider["width"] * 0.25, y)
    k = int(
        browser.wait_for("document.getElementById('slice').value !== '14' && document.getElementById('slice').value")
    )
    assert 4 <= k <= 10
    after = canvas()
    assert np.array_equal(after, volume[k]) and not np.array_equal(after, before)
    assert browser.evaluate("location.hash").endswith(f"slice={k}")

    browser.click("input[name=axis][value='2']")
    assert browser.wait_for("document.getElementById('sliceinfo').textContent === 'slice 14 of 27'")
    shot = browser.screenshot()
    shot.save(tmp_path / "adrenalmnist3d.png")
    assert np.array_equal(block_centres(crop(shot, browser.rect("#canvas")), 28, 28), volume[:, :, 14])


def test_filter_and_jump(browser, server, real_breastmnist):
    labels = np.load(real_breastmnist)["test_labels"].reshape(-1)
    browser.open(server.url() + "#config=breastmnist&split=test&label=label:0")
    assert browser.wait_for("document.getElementById('range').textContent.endsWith('matching')")
    rows = browser.evaluate("[...document.querySelectorAll('#rows tbody tr')].map((tr) => +tr.dataset.row)")
    assert rows == np.flatnonzero(labels == 0).tolist()
    assert '.filter(lambda row: row["label"] == 0)' in browser.evaluate(
        "document.getElementById('loadcode').textContent"
    )
    browser.click("#copy")
    assert browser.wait_for("document.getElementById('copy').textContent === 'Copied'")
    browser.evaluate("document.getElementById('jump').value = '123'")
    browser.click("#jumpform button")
    assert browser.wait_for(
        "document.querySelector('#rows tr.selected') && document.querySelector('#rows "
        "tr.selected').dataset.row === '123'"
    )
    assert browser.evaluate("document.getElementById('range').textContent") == "rows 101–156 of 156"


def test_a_broken_config_shows_its_error_and_the_picker_still_works(browser, built_medmnist, tmp_path):
    import shutil

    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    shard = out / "breastmnist" / "train-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:1000])
    with view.start(out).start_background() as v:
        browser.open(v.url("breastmnist"))
        error = browser.wait_for(
            "!document.getElementById('error').hidden && document.getElementById('error').textContent"
        )
        assert error.startswith("breastmnist: breastmnist/train-00000-of-00001.parquet: not a readable Parquet file")
        assert browser.evaluate("document.getElementById('rows').hidden")
        browser.evaluate(
            "const s = document.getElementById('config'); s.value = 'adrenalmnist3d'; "
            "s.dispatchEvent(new Event('change'))"
        )
        assert browser.wait_for(
            "document.querySelectorAll('#rows tbody tr').length === 100 && document.getElementById('error').hidden"
        )
        browser.evaluate("location.hash = '#config=adrenalmnist3d&split=test&offset=200'")  # typed into the address bar
        assert browser.wait_for("document.getElementById('range').textContent === 'rows 201–298 of 298'")
