"""Publishing a built folder to a Hub dataset repository: ``push``, resumable.

It uploads exactly the files :func:`hfmed.hub.readiness.check` recognises as the dataset (card,
shards, montages), never hfmed's hidden working folders, and never prints, logs or stores the
token: every message it raises is scrubbed of it.
"""

from __future__ import annotations

import glob
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfmed.errors import UserError, first_line
from hfmed.hub.readiness import CheckReport, check

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

DEFAULT_MESSAGE = "Upload dataset with hfmed"

# Exceptions of the HTTP stacks huggingface_hub has used (httpx2, httpx, requests) that mean "no
# connection": looked up by name so that whichever one is installed is recognised.
_NETWORK_ERRORS = (
    ("httpx2", "TransportError"),
    ("httpx", "TransportError"),
    ("requests", "ConnectionError"),
    ("requests", "Timeout"),
)


@dataclass
class PushResult:
    """What was (or, on a dry run, would be) uploaded, and where."""

    folder: Path
    repo: str
    target: str  # "datasets/ORG/NAME", with the revision or "as a pull request" where given
    files: list[Path] = field(default_factory=list)  # relative to folder
    total_bytes: int = 0
    url: str | None = None  # the repository, branch or pull request; None on a dry run
    problems: list[str] = field(default_factory=list)  # pushed anyway (force=True)
    dry_run: bool = False


class PushRefused(UserError):
    """``check`` found problems and ``force`` was not given; ``problems`` lists them."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def _network_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in _NETWORK_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _token(explicit: str | None) -> str:
    from huggingface_hub import get_token

    token = explicit or get_token()
    if not token:
        raise UserError("no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        # said before any HTTP library chokes on it, and without showing the token
        raise UserError(
            "the Hugging Face token holds characters no token has (non-ASCII, spaces or control characters); "
            "copy it again from https://huggingface.co/settings/tokens"
        )
    return token


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _literal(rel: Path) -> str:
    """An fnmatch pattern that matches exactly this path."""
    return glob.escape(rel.as_posix())


@dataclass(frozen=True)
class _Target:
    repo: str
    revision: str | None
    private: bool
    create_pr: bool
    message: str


def _upload(api: HfApi, folder: Path, report: CheckReport, to: _Target) -> Any:
    """Resumable upload of exactly the report's files; stale shards of the pushed configs are removed.

    huggingface_hub 2 made ``upload_folder`` itself resumable (re-running skips committed files)
    and able to open pull requests; older versions have a separate ``upload_large_folder`` that is
    resumable but can neither open a pull request nor delete files.
    """
    files, configs = report.files, report.configs
    allow = [_literal(f) for f in files]
    common = {"repo_id": to.repo, "folder_path": str(folder), "repo_type": "dataset", "allow_patterns": allow}
    stale_patterns = [f"{glob.escape(c)}/*" for c in configs]
    large = getattr(api, "upload_large_folder", None)
    if large is not None and not to.create_pr:
        large(**common, revision=to.revision, private=to.private)
        _delete_stale(api, files, configs, to)
        return None
    return api.upload_folder(
        **common,
        revision=None if to.create_pr else to.revision,
        create_pr=to.create_pr,
        delete_patterns=stale_patterns,
        commit_message=to.message,
    )


def _delete_stale(api: HfApi, files: list[Path], configs: list[str], to: _Target) -> None:
    from huggingface_hub import CommitOperationDelete

    local = {f.as_posix() for f in files}
    remote = api.list_repo_files(to.repo, repo_type="dataset", revision=to.revision)
    stale = [p for p in remote if p.split("/", 1)[0] in configs and p not in local]
    if stale:
        api.create_commit(
            to.repo,
            operations=[CommitOperationDelete(path_in_repo=p) for p in stale],
            commit_message="Remove shards that the build no longer has",
            repo_type="dataset",
            revision=to.revision,
        )


def _check_repo_id(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise UserError(
            f"--repo {repo!r} is not a Hub repository id; write it as ORG/NAME, e.g. my-org/medmnist"
        ) from None
    if repo.count("/") != 1:
        raise UserError(f"--repo {repo!r} needs the owner: write it as ORG/NAME, e.g. my-org/medmnist")


def push(
    folder: str | os.PathLike,
    repo: str,
    *,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    message: str = DEFAULT_MESSAGE,
    on_upload: Callable[[PushResult], None] | None = None,
) -> PushResult:
    """Check ``folder`` and upload it to the dataset repository ``repo`` (``ORG/NAME``), resumably.

    The token is ``token``, else ``HF_TOKEN`` or the stored login. ``check``'s problems refuse the
    push (:class:`PushRefused`) unless ``force``; its warnings are logged. ``on_upload`` is called
    with the planned result just before the upload starts (the command line says what it sends).
    """
    try:
        return _push(Path(folder), repo, revision, private, create_pr, token, dry_run, force, message, on_upload)
    except UserError as e:  # a message built from library text must not carry the token
        secret = token or os.environ.get("HF_TOKEN")
        if secret and secret in str(e):
            raise UserError(_scrub(str(e), secret)) from None
        raise


def _push(
    folder: Path,
    repo: str,
    revision: str | None,
    private: bool,
    create_pr: bool,
    token: str | None,
    dry_run: bool,
    force: bool,
    message: str,
    on_upload: Callable[[PushResult], None] | None,
) -> PushResult:
    from hfmed import cards

    _check_repo_id(repo)
    if create_pr and revision:
        raise UserError(
            "--create-pr opens a pull request against the default branch; drop --revision "
            "(to continue an interrupted PR push, pass --revision refs/pr/N without --create-pr)"
        )
    token = None if dry_run else _token(token)
    report = check(folder)
    if report.problems and not force:
        raise PushRefused(
            f"{folder} has {len(report.problems)} problem(s), listed above; fix them (see "
            f"`hfmed check {folder}`) or pass --force",
            report.problems,
        )
    for line in report.problems:
        logger.warning(line)
    if report.problems:
        logger.warning(f"pushing {folder} with {len(report.problems)} problem(s) (--force)")
    for line in report.warnings:
        logger.warning(line)
    target = (
        f"datasets/{repo}"
        + (f" (revision {revision})" if revision else "")
        + (" as a pull request" if create_pr else "")
    )
    result = PushResult(
        folder, repo, target, report.files, report.total_bytes, problems=report.problems, dry_run=dry_run
    )
    if dry_run:
        return result
    cards.write_card(folder, repo_id=repo)  # loading examples name the real repository
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    if on_upload is not None:
        on_upload(result)
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if revision and not revision.startswith("refs/pr/"):
            api.create_branch(repo, repo_type="dataset", branch=revision, exist_ok=True)
        uploaded = _upload(api, folder, report, _Target(repo, revision, private, create_pr, message))
    except OfflineModeIsEnabled:
        raise UserError("HF_HUB_OFFLINE is set, so nothing can be pushed; unset it and rerun") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hints = {
            401: "the token was refused; check it (hf auth whoami) or pass another with --token",
            403: f"the token may not write to {repo}; use a token with write access",
        }
        hint = hints.get(status, "rerun to continue; finished files are not uploaded again")
        raise UserError(
            f"the Hub refused the push to {repo} ({_scrub(first_line(e, with_type=True), token)}); {hint}"
        ) from None
    except _network_errors() as e:
        reason = _scrub(first_line(e, with_type=True), token)
        raise UserError(
            f"cannot reach the Hub ({reason}); check the connection and rerun: the upload continues where it stopped"
        ) from None
    result.url = getattr(uploaded, "pr_url", None) or f"https://huggingface.co/datasets/{repo}" + (
        f"/tree/{revision}" if revision else ""
    )
    return result
