"""Publishing a built folder: :func:`check` (would the Hub load and show it? offline) and :func:`push`.

``from hfmed import hub; hub.check(folder)`` and ``hub.push(folder, repo, ...)`` are the library
calls behind ``hfmed check`` and ``hfmed push``.
"""

from hfmed.hub import readiness, upload
from hfmed.hub.readiness import CheckReport, check, row_group_limit
from hfmed.hub.upload import PushRefused, PushResult, push

__all__ = ["CheckReport", "PushRefused", "PushResult", "check", "push", "readiness", "row_group_limit", "upload"]
