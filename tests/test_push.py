"""`hfmed push`: what reaches huggingface_hub, and what never leaves the process (the token).

No test touches the network: the HfApi methods push uses are replaced by recorders, and each test
asserts what they received.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from hfmed.cli import main

TOKEN = "hf_FAKEtokenNEVERtoBEshown0123456789"
REPO = "my-org/medmnist"


class Hub:
    """Records every HfApi call push makes; ``fail`` makes a named method raise."""

    def __init__(self, monkeypatch, remote_files=()):
        self.calls: list[tuple[str, dict]] = []
        self.fail: dict[str, BaseException] = {}
        self.remote_files = list(remote_files)
        for name in ("create_repo", "create_branch", "upload_folder", "list_repo_files", "create_commit"):
            monkeypatch.setattr(HfApi, name, self._recorder(name))

    def _recorder(self, name):
        hub = self

        def method(api, *args, **kwargs):
            hub.calls.append((name, {"token": api.token, "args": args, **kwargs}))
            if name in hub.fail:
                raise hub.fail[name]
            if name == "list_repo_files":
                return hub.remote_files
            if name == "upload_folder":
                return SimpleNamespace(
                    pr_url=f"https://huggingface.co/datasets/{args[0] if args else kwargs['repo_id']}/discussions/7"
                    if kwargs.get("create_pr")
                    else None
                )
            return None

        return method

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def call(self, name: str) -> dict:
        found = [kw for n, kw in self.calls if n == name]
        assert len(found) == 1, self.calls
        return found[0]


@pytest.fixture
def folder(tmp_path, built_medmnist) -> Path:
    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    return out


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """No token anywhere: not in the environment, not in a stored login."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def dataset_files(folder: Path) -> list[str]:
    shards = [p.relative_to(folder).as_posix() for p in folder.glob("*/*.parquet") if not p.parent.name.startswith(".")]
    return sorted(["README.md", *shards, "images/adrenalmnist3d.png", "images/breastmnist.png"])


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("hfmed: error:")]


# --- what is uploaded --------------------------------------------------------------------------


def test_push_creates_the_repository_and_uploads_exactly_the_dataset_files(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    (folder / ".hfmed-tmp-breastmnist-99").mkdir()
    (folder / ".hfmed-tmp-breastmnist-99" / "train-00000-of-00001.parquet").write_bytes(b"half")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "upload.lock").write_bytes(b"")
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN]) == 0
    assert hub.names() == ["create_repo", "upload_folder"]
    repo = hub.call("create_repo")
    assert (
        repo["args"] == (REPO,)
        and repo["repo_type"] == "dataset"
        and repo["exist_ok"] is True
        and repo["private"] is False
    )
    up = hub.call("upload_folder")
    assert up["token"] == TOKEN
    assert (up["repo_id"], up["repo_type"], Path(up["folder_path"])) == (REPO, "dataset", folder)
    assert sorted(up["allow_patterns"]) == dataset_files(folder)
    assert up["revision"] is None and up["create_pr"] is False
    assert sorted(up["delete_patterns"]) == [
        "adrenalmnist3d/*",
        "breastmnist/*",
    ]  # stale shards of the pushed configs go
    assert f"https://huggingface.co/datasets/{REPO}" in capsys.readouterr().out


def test_push_names_the_repository_in_the_cards_loading_examples(folder, monkeypatch):
    Hub(monkeypatch)
    assert 'load_dataset("<org>/medmnist", "breastmnist"' in (folder / "README.md").read_text(encoding="utf-8")
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN]) == 0
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert f'load_dataset("{REPO}", "breastmnist", streaming=True)' in text
    assert "<org>" not in text


def test_private_and_revision_reach_the_hub(folder, monkeypatch):
    hub = Hub(monkeypatch)
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN, "--private", "--revision", "v2"]) == 0
    assert hub.names() == ["create_repo", "create_branch", "upload_folder"]
    assert hub.call("create_repo")["private"] is True
    branch = hub.call("create_branch")
    assert (branch["args"], branch["branch"], branch["repo_type"], branch["exist_ok"]) == (
        (REPO,),
        "v2",
        "dataset",
        True,
    )
    assert hub.call("upload_folder")["revision"] == "v2"


def test_create_pr_opens_a_pull_request_and_prints_its_address(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN, "--create-pr"]) == 0
    up = hub.call("upload_folder")
    assert up["create_pr"] is True and up["revision"] is None
    assert f"https://huggingface.co/datasets/{REPO}/discussions/7" in capsys.readouterr().out


def test_create_pr_with_a_revision_is_refused_before_anything_happens(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN, "--create-pr", "--revision", "v2"]) == 2
    assert len(error_lines(capsys)) == 1
    assert hub.calls == []


def test_with_a_separate_large_folder_uploader_it_is_used_and_stale_shards_are_deleted(folder, monkeypatch):
    """huggingface_hub before 2 resumes large uploads only through upload_large_folder."""
    hub = Hub(
        monkeypatch,
        remote_files=[
            "README.md",
            "breastmnist/train-00000-of-00002.parquet",
            "breastmnist/train-00000-of-00001.parquet",
            "organmnist/x.parquet",
        ],
    )
    monkeypatch.setattr(HfApi, "upload_large_folder", hub._recorder("upload_large_folder"), raising=False)
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN, "--revision", "v2"]) == 0
    assert hub.names() == ["create_repo", "create_branch", "upload_large_folder", "list_repo_files", "create_commit"]
    large = hub.call("upload_large_folder")
    assert (large["repo_id"], large["repo_type"], large["revision"]) == (REPO, "dataset", "v2")
    assert sorted(large["allow_patterns"]) == dataset_files(folder)
    commit = hub.call("create_commit")
    assert commit["revision"] == "v2"
    ops = commit["operations"]
    assert all(isinstance(op, CommitOperationDelete) for op in ops)
    assert [op.path_in_repo for op in ops] == [
        "breastmnist/train-00000-of-00002.parquet"
    ]  # other configs are left alone


def test_a_folder_with_problems_is_not_pushed_unless_forced(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: belongs to no config" in err and "--force" in err
    assert hub.calls == []
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN, "--force"]) == 0
    assert "notes.txt" not in hub.call("upload_folder")["allow_patterns"]


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_lists_files_and_size_without_token_or_network(folder, monkeypatch, capsys, no_login):
    hub = Hub(monkeypatch)
    before = (folder / "README.md").read_bytes()
    assert main(["push", str(folder), "--repo", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = [line.split()[-1] for line in out[:-1]]
    assert listed == dataset_files(folder)
    total = sum((folder / f).stat().st_size for f in listed)
    assert f"{len(listed)} files" in out[-1] and f"({total:,} bytes)" in out[-1] and REPO in out[-1]
    assert hub.calls == []
    assert (folder / "README.md").read_bytes() == before


# --- failures are one line, exit 2 -------------------------------------------------------------


def test_a_missing_token_is_one_line(folder, monkeypatch, capsys, no_login):
    hub = Hub(monkeypatch)
    assert main(["push", str(folder), "--repo", REPO]) == 2
    [line] = error_lines(capsys)
    assert "no Hugging Face token" in line and "HF_TOKEN" in line
    assert hub.calls == []


def test_the_token_comes_from_hf_token_when_not_given(folder, monkeypatch):
    hub = Hub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push", str(folder), "--repo", REPO]) == 0
    assert hub.call("upload_folder")["token"] == TOKEN


def test_an_unreachable_hub_is_one_line(folder, monkeypatch, capsys):
    import httpx2  # the HTTP client of the installed huggingface_hub

    hub = Hub(monkeypatch)
    hub.fail["create_repo"] = httpx2.ConnectError("[Errno 111] Connection refused")
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN]) == 2
    [line] = error_lines(capsys)
    assert "cannot reach the Hub" in line and "Connection refused" in line


def test_offline_mode_is_one_line(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    hub.fail["create_repo"] = OfflineModeIsEnabled("offline")
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN]) == 2
    [line] = error_lines(capsys)
    assert "HF_HUB_OFFLINE" in line


def test_a_refused_token_is_one_line(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    response = SimpleNamespace(status_code=401, headers={}, request=None)
    hub.fail["create_repo"] = HfHubHTTPError("401 Client Error: Unauthorized", response=response)
    assert main(["push", str(folder), "--repo", REPO, "--token", TOKEN]) == 2
    [line] = error_lines(capsys)
    assert "token was refused" in line


def test_a_malformed_repository_id_is_one_line(folder, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    for bad in ("medmnist", "my org/medmnist"):
        assert main(["push", str(folder), "--repo", bad, "--token", TOKEN]) == 2
        [line] = error_lines(capsys)
        assert "ORG/NAME" in line
    assert hub.calls == []


# --- the token stays secret --------------------------------------------------------------------


@pytest.mark.parametrize("source", ["--token", "HF_TOKEN"])
def test_the_token_is_never_printed_logged_or_written(folder, monkeypatch, capsys, caplog, source):
    caplog.set_level(logging.DEBUG)
    hub = Hub(monkeypatch)
    args = ["push", str(folder), "--repo", REPO]
    if source == "--token":
        args += ["--token", TOKEN]
    else:
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(args) == 0
    # a failure whose library message quotes the token must not repeat it either
    response = SimpleNamespace(status_code=500, headers={}, request=None)
    hub.fail["upload_folder"] = HfHubHTTPError(f"500 Server Error for Authorization: Bearer {TOKEN}", response=response)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert all(kw["token"] == TOKEN for _, kw in hub.calls)  # it did reach the library
    for text in (captured.out, captured.err, caplog.text):
        assert TOKEN not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# --- the library call behind the command -------------------------------------------------------


def test_push_is_a_plain_function_returning_what_it_sent(folder, monkeypatch):
    hub_api = Hub(monkeypatch)
    from hfmed import hub

    planned = hub.push(folder, REPO, revision="v2", dry_run=True)
    assert hub_api.calls == [] and planned.url is None and planned.dry_run
    assert sorted(f.as_posix() for f in planned.files) == dataset_files(folder)
    assert planned.target == f"datasets/{REPO} (revision v2)"
    assert planned.total_bytes == sum((folder / f).stat().st_size for f in planned.files)
    sent = hub.push(folder, REPO, token=TOKEN, private=True)
    assert sent.url == f"https://huggingface.co/datasets/{REPO}" and sent.files == planned.files
    assert hub_api.call("create_repo")["private"] is True


def test_a_refused_push_is_a_value_error_that_lists_the_problems(folder, monkeypatch):
    Hub(monkeypatch)
    from hfmed import hub

    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError) as refused:
        hub.push(folder, REPO, token=TOKEN)
    assert isinstance(refused.value, hub.PushRefused)
    assert [p for p in refused.value.problems if p.startswith("notes.txt: belongs to no config")]
