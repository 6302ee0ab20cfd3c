"""The local HTTP server behind ``hfmed view``: the page, a small JSON API, and nothing else.

The standard library's ``ThreadingHTTPServer`` is enough for one user's browser: a request reads
a few row groups and answers, a slow one (a large volume) does not hold up the others, and there is
nothing to install. Every URL is looked up, never joined onto a path: configs and splits are names
in the card, static files a fixed list shipped in the package, and the only files of the build
folder served (the card's pictures) are checked to lie inside it after links are resolved.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from hfmed.errors import UserError
from hfmed.view import cardtext
from hfmed.view.catalog import Broken, Catalog, Column, Config, NotFound

if TYPE_CHECKING:
    from types import ModuleType

#: A request's query string as parse_qs reads it.
Query = dict[str, list[str]]

PAGE_ROWS = 100  # rows per page, as the Hub viewer shows them
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PICTURES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
LOCAL_NAMES = {"localhost", "127.0.0.1", "[::1]"}
# The browser itself enforces that the page loads nothing from elsewhere (images: this server or data: URIs).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class BadRequest(Exception):
    pass


def _static(name: str) -> bytes:
    return resources.files("hfmed.view").joinpath("static", name).read_bytes()


def _param(query: Query, name: str, default: str | None = None) -> str:
    values = query.get(name)
    if not values:
        if default is None:
            raise BadRequest(f"missing query parameter {name!r}")
        return default
    return values[0]


def _int(query: Query, name: str, default: int | None = None) -> int:
    text = _param(query, name, None if default is None else str(default))
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a whole number") from None


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the address printed at start

    # --- answers -----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # the shards may be rebuilt; never show old rows
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", PAGE_POLICY)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_allowed(self) -> bool:
        """Bound to loopback, answer only requests addressed to loopback names (no DNS rebinding)."""
        if not self.server.loopback:
            return True
        host = self.headers.get("Host")
        if host is None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.lower() in LOCAL_NAMES

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._host_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "this server answers only requests addressed to localhost")
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        try:
            if path in ("/", "/index.html"):
                return self._send(200, _static("index.html"), STATIC["index.html"])
            if path.startswith("/static/") and path[len("/static/") :] in STATIC:
                name = path[len("/static/") :]
                return self._send(200, _static(name), STATIC[name])
            if path.startswith("/files/"):
                return self._file(path[len("/files/") :])
            api = {
                "/api/configs": self._configs,
                "/api/config": self._config,
                "/api/rows": self._rows,
                "/api/volume": self._volume,
                "/api/card": self._card,
            }
            if path in api:
                return api[path](query)
            return self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
        except BadRequest as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        except NotFound as e:
            return self._error(HTTPStatus.NOT_FOUND, str(e))
        except (Broken, UserError) as e:
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e))
        except (BrokenPipeError, ConnectionResetError):
            return None  # the browser moved on
        except Exception as e:  # a bug or an unexpected file: one config's error, the server goes on
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")

    # --- routes ------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self.server.catalog

    @property
    def rows(self) -> ModuleType:
        # numpy and Arrow compute take about half a second to import: start-up needs the card only,
        # so they load with the first config asked for
        from hfmed.view import rows

        return rows

    def _configs(self, query: Query) -> None:
        build = self.catalog.read()
        self._json(
            200,
            {
                "folder": str(self.catalog.folder),
                "configs": [
                    {"name": c.name, "default": c.default, "splits": list(c.patterns), "rows": c.declared_rows}
                    for c in build.configs
                ],
            },
        )

    def _config(self, query: Query) -> None:
        catalog = self.catalog
        build = catalog.read()
        config = build.config(_param(query, "config"))
        if not config.patterns:
            raise Broken(f"README.md: config {config.name!r} lists no data_files; rebuild the card with `hfmed build`")
        columns = catalog.columns(config)
        splits, labels = [], {}
        for split in config.patterns:
            files = catalog.shards(config, split)
            splits.append({"name": split, "rows": self.rows.num_rows(files)})
            for col in columns:
                if col.kind in ("class_label", "label_list"):
                    labels.setdefault(col.name, {})[split] = self.rows.label_counts(files, col)
        self._json(
            200,
            {
                "name": config.name,
                "folder": str(catalog.folder),
                "splits": splits,
                "columns": [c.as_json() for c in columns],
                "labels": labels,
                "card": cardtext.for_config(build.body, config.name, build.names) if build.body else "",
                "page_rows": PAGE_ROWS,
            },
        )

    def _split(self, query: Query) -> tuple[Config, list[Column], list[Path]]:
        config = self.catalog.read().config(_param(query, "config"))
        files = self.catalog.shards(config, _param(query, "split"))
        return config, self.catalog.columns(config), files

    def _rows(self, query: Query) -> None:
        config, columns, files = self._split(query)
        offset = _int(query, "offset", 0)
        length = min(_int(query, "length", PAGE_ROWS), PAGE_ROWS)
        if offset < 0 or length < 0:
            raise BadRequest("offset and length must not be negative")
        label = _param(query, "label", "")
        if label:
            name, _, value = label.rpartition(":")
            col = next((c for c in columns if c.name == name and c.kind in ("class_label", "label_list")), None)
            if col is None or not value.lstrip("-").isdigit():
                raise BadRequest(f"label={label!r}: expected <label column>:<class id>")
            selected = self.rows.matching(files, col, int(value))
            total, chosen = len(selected), selected[offset : offset + length].tolist()
        else:
            total = self.rows.num_rows(files)
            chosen = list(range(offset, min(offset + length, total)))
        self._json(200, {"total": total, "offset": offset, "rows": self.rows.read_rows(files, chosen, columns)})

    def _volume(self, query: Query) -> None:
        config, columns, files = self._split(query)
        name = _param(query, "column")
        col = next((c for c in columns if c.name == name and c.kind == "array3d"), None)
        if col is None:
            raise NotFound(f"config {config.name!r} has no 3D column {name!r}")
        index = _int(query, "row")
        if not 0 <= index < self.rows.num_rows(files):
            raise NotFound(f"no row {index} in {config.name}/{_param(query, 'split')}")
        self._send(200, self.rows.volume(files, index, col), "application/octet-stream")

    def _card(self, query: Query) -> None:
        self._json(200, {"markdown": self.catalog.read().body})

    def _file(self, rel: str) -> None:
        """A picture of the build folder the card links to; nothing outside the folder, nothing hidden."""
        parts = PurePosixPath(rel).parts
        bad = (
            not rel
            or rel.startswith("/")
            or "\\" in rel
            or "\x00" in rel
            or any(p in ("..", ".") or p.startswith(".") for p in parts)
        )
        real = None if bad else self.catalog.inside(self.catalog.folder.joinpath(*parts))
        if real is None or real.suffix.lower() not in PICTURES:
            return self._error(HTTPStatus.NOT_FOUND, f"no picture {rel!r} in the build folder")
        self._send(200, real.read_bytes(), PICTURES[real.suffix.lower()])


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C does not wait for a browser's open connections
    catalog: Catalog
    loopback: bool


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Viewer:
    """A started server for one build folder; ``run`` serves until Ctrl-C, ``close`` stops it."""

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.catalog = Catalog(folder)
        self.configs = self.catalog.read().names
        if not self.configs:
            raise UserError(
                f"{folder}: holds no config (no card listing configs, no folder of .parquet "
                "shards); build one with `hfmed build`"
            )
        server_class = _Server
        if ":" in host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self.httpd = server_class((host.strip("[]"), port), Handler)
        except OSError as e:
            raise UserError(
                f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port (0 "
                "picks a free one) or --host"
            ) from None
        self.httpd.catalog = self.catalog
        self.httpd.loopback = _is_loopback(host)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect."""
        return self.httpd.loopback

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, config: str | None = None) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()
        return f"http://{host}:{self.port}/" + (f"#config={config}" if config else "")

    def run(self) -> None:
        """Serve until Ctrl-C (or ``close`` from another thread), then release the port."""
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.httpd.server_close()

    def start_background(self) -> Viewer:
        self._thread = threading.Thread(target=self.run, name="hfmed-view", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(folder: str | Path, *, host: str = "127.0.0.1", port: int = 0, config: str | None = None) -> Viewer:
    """Open the server on ``host:port`` (0: a free port) for the build in ``folder``; it serves once ``run`` is called.

    ``config``, when given, must be one of the build's configs (the page opens on it: ``Viewer.url(config)``).
    """
    viewer = Viewer(folder, host, port)
    if config is not None and config not in viewer.configs:
        viewer.close()
        raise UserError(f"{folder}: has no config {config!r}; it has {', '.join(viewer.configs)}")
    return viewer
