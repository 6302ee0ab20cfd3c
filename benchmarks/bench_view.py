"""How fast `hfmed view` starts on a 60-config build, and how fast its first pages come.

The build is made from real data: the real breastmnist (2D) and adrenalmnist3d (3D) files are built
once with the project's builder, then their shard folders are copied under 30 config names each and
a card declaring all 60 configs is written (the real card's entries, renamed). Start-up is timed as
a user sees it: from launching `hfmed view` in a fresh Python process to the first answer of
/api/configs. Beside it, the first 100 rows of a config the way one would read them without the
viewer (`datasets.load_dataset` in a fresh process), and the viewer's own first page.

    python benchmarks/bench_view.py [--repeat 5] [--work /tmp/bench_view]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "medmnist"
COPIES = 30  # of each real config: 60 configs in all


def build_60(work: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from hfmed.loading_scripts.medmnist import MedMNIST

    from hfmed.writer import build_config

    real = work / "real"
    if not (real / "README.md").exists():
        for flag in ("breastmnist", "adrenalmnist3d"):
            build_config(MedMNIST(flag, SHARED / f"{flag}.npz"), real, progress=False)
    out = work / "medmnist60"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    text = (real / "README.md").read_text()
    _, head, body = text.split("---\n", 2)
    card = yaml.safe_load(head)
    configs, infos = [], []
    originals = {c["config_name"]: c for c in card["configs"]}
    info_of = {i["config_name"]: i for i in card["dataset_info"]}
    for flag in ("breastmnist", "adrenalmnist3d"):
        for i in range(COPIES):
            name = f"{flag}_copy{i:02d}"
            shutil.copytree(real / flag, out / name)
            c = json.loads(json.dumps(originals[flag]))
            c["config_name"] = name
            c.pop("default", None)
            for entry in c["data_files"]:
                entry["path"] = entry["path"].replace(f"{flag}/", f"{name}/", 1)
            configs.append(c)
            infos.append({**json.loads(json.dumps(info_of[flag])), "config_name": name})
    configs[0]["default"] = True
    card.update(configs=configs, dataset_info=infos)
    shutil.copytree(real / "images", out / "images")
    (out / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False, allow_unicode=True) + "---\n" + body)
    return out


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def cli_startup(folder: Path) -> tuple[float, float]:
    """Seconds from launching `hfmed view` to its first /api/configs answer, and to its first page of rows."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfmed.cli", "view", str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        url = proc.stdout.readline().split(" at ", 1)[1].split()[0]
        configs = json.loads(get(url + "api/configs"))
        t_configs = time.perf_counter() - t0
        assert len(configs["configs"]) == 2 * COPIES, len(configs["configs"])
        get(url + "api/config?config=breastmnist_copy17")
        page = json.loads(get(url + "api/rows?config=breastmnist_copy17&split=train"))
        assert len(page["rows"]) == 100
        t_page = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    return t_configs, t_page


def cli_alone() -> float:
    """Seconds for `hfmed --help` in a fresh process (Python, and the parser with every command).

    The floor under any start-up.
    """
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hfmed.cli", "--help"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def datasets_first_page(folder: Path) -> float:
    """Seconds for a fresh process to read the same 100 rows with `datasets` (no viewer)."""
    code = (
        f"from datasets import load_dataset; ds = load_dataset({str(folder)!r}, "
        "'breastmnist_copy17', split='train[0:100]');"
        " assert len(ds) == 100; [r['image'].size for r in ds]"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - t0


def in_process(folder: Path, repeat: int) -> dict[str, float]:
    """Medians of the library's own steps, Python already started."""
    from hfmed import view

    steps: dict[str, list[float]] = {
        "start (card read, port bound)": [],
        "/api/configs": [],
        "/api/config 2D": [],
        "/api/rows 2D, 100 rows": [],
        "/api/rows 3D, 100 rows": [],
        "/api/volume 28^3": [],
    }
    for _ in range(repeat):
        t = time.perf_counter()
        v = view.start(folder).start_background()
        steps["start (card read, port bound)"].append(time.perf_counter() - t)
        base = v.url()
        for key, path in (
            ("/api/configs", "api/configs"),
            ("/api/config 2D", "api/config?config=breastmnist_copy05"),
            ("/api/rows 2D, 100 rows", "api/rows?config=breastmnist_copy05&split=train&offset=200"),
            ("/api/rows 3D, 100 rows", "api/rows?config=adrenalmnist3d_copy05&split=train&offset=1000"),
            ("/api/volume 28^3", "api/volume?config=adrenalmnist3d_copy05&split=train&row=1100&column=volume"),
        ):
            t = time.perf_counter()
            get(base + path)
            steps[key].append(time.perf_counter() - t)
        v.close()
    return {k: statistics.median(v) for k, v in steps.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--work", default="/tmp/bench_view")
    args = p.parse_args()
    folder = build_60(Path(args.work))
    card_kib = (folder / "README.md").stat().st_size / 1024
    print(f"build: {folder} (60 configs, card {card_kib:.0f} KiB)")
    runs = [cli_startup(folder) for _ in range(args.repeat)]
    configs_s = statistics.median(r[0] for r in runs)
    page_s = statistics.median(r[1] for r in runs)
    ds_s = statistics.median(datasets_first_page(folder) for _ in range(args.repeat))
    floor_s = statistics.median(cli_alone() for _ in range(args.repeat))
    print(f"hfmed --help alone: median {floor_s * 1000:.0f} ms")
    print(
        "hfmed view, launch to first /api/configs answer: median "
        f"{configs_s * 1000:.0f} ms (min {min(r[0] for r in runs) * 1000:.0f}, max "
        f"{max(r[0] for r in runs) * 1000:.0f}) over {args.repeat}"
    )
    print(f"hfmed view, launch to the first page of 100 rows: median {page_s * 1000:.0f} ms")
    print(
        "datasets.load_dataset, fresh process to the same 100 rows: median "
        f"{ds_s * 1000:.0f} ms ({ds_s / page_s:.1f}x the viewer)"
    )
    for key, seconds in in_process(folder, args.repeat).items():
        print(f"  in process, {key}: median {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
