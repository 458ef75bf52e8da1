"""A small real HTTP server standing in for the Hugging Face hub (``HF_ENDPOINT``), and a hub cache
laid out by hand as huggingface_hub lays it out. No test reaches the internet.

The server answers the routes huggingface_hub 0.36 calls to resolve and download a model, as the
hub answers them (the parts of the answers the client reads):

* ``GET /api/models/{org}/{name}[/revision/{revision}]``: the model's info as JSON, ``id``,
  ``sha`` (the commit the revision resolves to) and ``siblings`` (its files); 404 with
  ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``; 401 (``RepoNotFound``) for a private
  model without its token.
* ``HEAD`` and ``GET /{org}/{name}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (the
  file's git blob sha1, or for large files ``X-Linked-Etag``, their SHA-256, as the hub serves
  LFS files), ``Content-Length``; ``GET`` honours ``Range``. 404 ``EntryNotFound`` for a missing
  file.

Every request is recorded (method, path, Authorization header) so tests can check what the client
asked for and what it sent.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_THRESHOLD = 10 * 1024   # files at least this big are served as the hub serves LFS files


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_sha(files: dict[str, bytes], salt: str = "") -> str:
    """A stable 40-hex commit id for a set of files (the hub's are git commit shas)."""
    h = hashlib.sha1(salt.encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def read_folder(folder: str) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


@dataclass
class HubRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)   # sha -> files
    refs: dict[str, str] = field(default_factory=dict)                    # branch/tag -> sha
    token: str | None = None                                              # private: needs it

    def add_commit(self, files: dict[str, bytes], *refs: str) -> str:
        sha = commit_sha(files, salt=str(len(self.commits)))
        self.commits[sha] = dict(files)
        for ref in refs:
            self.refs[ref] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


class FakeHub:
    """``with FakeHub() as hub: hub.repos["org/name"] = HubRepo(...)``; ``hub.endpoint`` is the URL."""

    def __init__(self):
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # keep pytest's output clean
                pass

            def do_GET(self):
                hub._handle(self, body=True)

            def do_HEAD(self):
                hub._handle(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method in (None, m)]

    # --------------------------------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append((request.command, path, request.headers.get("Authorization")))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+?)(?:/revision/(.+))?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if api:
            self._model_info(request, api.group(1), api.group(2) or "main", body)
        elif resolve:
            self._file(request, resolve.group(1), resolve.group(2), resolve.group(3), body)
        else:
            self._error(request, 404, None, "no such route", body)

    def _commit(self, request, repo_id: str, revision: str, body: bool) -> tuple[HubRepo, str] | None:
        """The repo and the commit ``revision`` names, or None once the hub's error was sent."""
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(request, 404, "RepoNotFound", "Repository not found", body)
            return None
        if repo.token and request.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(request, 401, "RepoNotFound", "Invalid username or password.", body)
            return None
        sha = repo.resolve(revision)
        if sha is None:
            self._error(request, 404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
            return None
        return repo, sha

    def _model_info(self, request, repo_id: str, revision: str, body: bool) -> None:
        found = self._commit(request, repo_id, revision, body)
        if found is None:
            return
        repo, sha = found
        info = {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                "sha": sha, "private": bool(repo.token), "tags": [], "library_name": "transformers",
                "siblings": [{"rfilename": name} for name in sorted(repo.commits[sha])]}
        self._send(request, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def _file(self, request, repo_id: str, revision: str, name: str, body: bool) -> None:
        found = self._commit(request, repo_id, revision, body)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(name)
        if data is None:
            self._error(request, 404, "EntryNotFound", f"{name} does not exist on {revision}", body)
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if len(data) >= LFS_THRESHOLD:
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        headers["ETag"] = f'"{git_blob_sha1(data)}"'
        status, start = 200, 0
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range") or "")
        if wanted:
            start = int(wanted.group(1))
            stop = int(wanted.group(2)) + 1 if wanted.group(2) else len(data)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            data, status = data[start:stop], 206
        self._send(request, status, data, headers, body)

    @staticmethod
    def _error(request, status: int, code: str | None, message: str, body: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        FakeHub._send(request, status, json.dumps({"error": message}).encode(), headers, body)

    @staticmethod
    def _send(request, status: int, data: bytes, headers: dict, body: bool) -> None:
        request.send_response(status)
        for k, v in headers.items():
            request.send_header(k, v)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)


def write_hub_cache(cache_dir: str, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
    """A model in a hub cache, laid out as huggingface_hub lays it out (written here by hand):
    ``models--ORG--NAME/blobs/<etag>`` holding the bytes, ``snapshots/<sha>/<file>`` symlinks to
    them, ``refs/<revision>`` holding the sha. Returns the commit sha."""
    repo = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    sha = commit_sha(files)
    for sub in ("blobs", f"snapshots/{sha}", "refs"):
        os.makedirs(os.path.join(repo, sub), exist_ok=True)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest() if len(data) >= LFS_THRESHOLD else git_blob_sha1(data)
        blob = os.path.join(repo, "blobs", etag)
        with open(blob, "wb") as f:
            f.write(data)
        link = os.path.join(repo, "snapshots", sha, name)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    with open(os.path.join(repo, "refs", revision), "w") as f:
        f.write(sha)
    return sha
