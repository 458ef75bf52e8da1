"""``--model`` as a Hugging Face model id: resolved through huggingface_hub into this machine's
Hugging Face cache. Beam-free (the launcher and the workers both use it).

Spellings: ``ORG/NAME`` (when no local path of that name exists), ``hf://ORG/NAME``, either with
``@REVISION`` (a branch, a tag or a commit sha; default ``main``): ``MIT/ast-finetuned-audioset-10-10-0.4593``,
``hf://MIT/ast-finetuned-audioset-10-10-0.4593@f826b80``.

* The launcher resolves the revision to its commit sha once (the hub's API, or the cache's
  ``refs/<revision>`` offline) and downloads only the files a worker loads (``config.json``,
  ``model.safetensors``, ``preprocessor_config.json``, ``SHA256SUMS``): never a pickle. It then
  inspects and fingerprints that snapshot as it does a checkpoint directory; the workers get the
  pinned ``hf://ORG/NAME@<sha>`` and verify their copy against the launcher's digests
  (transforms/io/checkpoint_cache.py), so every worker labels with the very files the launcher saw.
* The environment is huggingface_hub's, read when a model is resolved: ``HF_ENDPOINT`` (a mirror
  or a private hub), ``HF_HOME`` / ``HF_HUB_CACHE`` (the cache; the hub's own layout
  ``models--ORG--NAME/{blobs,snapshots/<sha>,refs}``, shared with transformers and every other
  hub client on the machine), ``HF_HUB_OFFLINE=1`` (no network: the cache must hold the snapshot)
  and ``HF_TOKEN`` (or the token file of ``hf auth login``) for private and gated models. The
  token is sent to the hub only: it is never in the model URI, the manifest, a row or a message.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass

from transforms.io.checkpoint import (CHECKPOINT_FILES, CHECKSUMS_FILE, PICKLE_WEIGHTS, WEIGHTS_FILE,
                                      CheckpointError, CheckpointInfo, inspect_checkpoint)
from transforms.io.storage import protocol_of

HUB_SCHEME = "hf://"
DEFAULT_REVISION = "main"
# What a snapshot download fetches: what a worker loads and the optional checksums file.
HUB_FILES = (*CHECKPOINT_FILES, CHECKSUMS_FILE)
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class HubModelError(CheckpointError):
    """The model id cannot be resolved or downloaded (unknown id or revision, offline without a
    cached snapshot, no access)."""


@dataclass(frozen=True)
class HubModel:
    repo_id: str                  # ORG/NAME
    revision: str = DEFAULT_REVISION   # as asked: a branch, a tag or a commit sha

    @property
    def uri(self) -> str:
        return f"{HUB_SCHEME}{self.repo_id}@{self.revision}"

    @property
    def pinned(self) -> bool:
        return bool(_COMMIT_SHA.fullmatch(self.revision))


def parse_hub_model(value: str | None) -> HubModel | None:
    """The hub model ``value`` names, or None when it is a path or URL. ``hf://`` always names a
    hub model; a bare ``ORG/NAME[@REV]`` does when nothing exists at that local path."""
    if not value:
        return None
    if value.startswith(HUB_SCHEME):
        spec = value[len(HUB_SCHEME):].strip("/")
    elif protocol_of(value) in ("file", "local") and "://" not in value and not os.path.exists(value):
        spec = value
    else:
        return None
    repo_id, _, revision = spec.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        if value.startswith(HUB_SCHEME):
            raise HubModelError(f"--model {value}: not a Hugging Face model id (hf://ORG/NAME[@REVISION])")
        return None
    if "@" in spec and not revision:
        raise HubModelError(f"--model {value}: empty revision after '@'")
    return HubModel(repo_id, revision or DEFAULT_REVISION)


def is_hub_model(value: str | None) -> bool:
    try:
        return parse_hub_model(value) is not None
    except HubModelError:
        return True


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now: huggingface_hub reads it once, at import."""
    return _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")


def hub_cache_dir() -> str:
    """The hub cache huggingface_hub would use, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache",
                                                     "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _explain(model: HubModel, error: Exception) -> HubModelError:
    """One line naming the model and what to do; huggingface_hub's own wording after it."""
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, GatedRepoError):
        why = "the model is gated: accept its terms on the hub and give a token (HF_TOKEN)"
    elif isinstance(error, RepositoryNotFoundError):
        why = "no such model on the hub, or it is private and no valid token was given (HF_TOKEN)"
    elif isinstance(error, RevisionNotFoundError):
        why = f"the model has no revision {model.revision!r}"
    elif isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and hub_offline():
        why = (f"HF_HUB_OFFLINE is set and the Hugging Face cache ({hub_cache_dir()}) holds no snapshot "
               f"of revision {model.revision!r}; download it once with network access (or set HF_HOME "
               "to a cache that has it)")
    elif isinstance(error, LocalEntryNotFoundError):
        why = "the hub could not be reached and the Hugging Face cache holds no snapshot of it"
    else:
        why = f"{type(error).__name__}"
    return HubModelError(f"--model {model.uri}: {why} ({first})")


def _quiet_tqdm():
    """huggingface_hub's progress bar class, switched off (workers load quietly)."""
    from huggingface_hub.utils import tqdm

    class Quiet(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def download_snapshot(model: HubModel, progress: bool = False, local_only: bool = False,
                      files: tuple[str, ...] = HUB_FILES) -> tuple[str, str]:
    """(local snapshot folder, commit sha) of ``model``'s ``files`` (default: the checkpoint's),
    in this machine's Hugging Face cache: downloaded where missing, from the cache alone when
    offline (or ``local_only``). ``progress``: huggingface_hub's download bars on stderr."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model.repo_id, revision=model.revision, allow_patterns=list(files),
                                   cache_dir=hub_cache_dir(), local_files_only=local_only or hub_offline(),
                                   endpoint=_hub_endpoint(), tqdm_class=None if progress else _quiet_tqdm())
    except Exception as e:   # huggingface_hub's errors, requests' connection errors
        raise _explain(model, e) from e
    sha = os.path.basename(os.path.normpath(folder))
    if not _COMMIT_SHA.fullmatch(sha):
        raise HubModelError(f"--model {model.uri}: huggingface_hub returned {folder}, not a snapshot folder")
    return folder, sha


def _repo_pickles(model: HubModel, sha: str, folder: str) -> list[str]:
    """Pickle weight files the revision holds (named in the refusal; never downloaded)."""
    names = set(os.listdir(folder))
    if not hub_offline():
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=_hub_endpoint()).model_info(model.repo_id, revision=sha)
            names |= {s.rfilename for s in info.siblings or []}
        except Exception:   # the refusal still stands; it only names fewer files
            pass
    return sorted(n for n in names if os.path.basename(n) in PICKLE_WEIGHTS)


def inspect_hub_model(model: HubModel) -> CheckpointInfo:
    """Resolve, download and inspect: the CheckpointInfo of the snapshot, whose ``uri`` is the
    pinned ``hf://ORG/NAME@<sha>`` (what workers fetch) and whose ``hub`` records the id, the
    revision asked for and the commit it resolved to."""
    folder, sha = download_snapshot(model, progress=sys.stderr.isatty())
    pinned = HubModel(model.repo_id, sha)
    if not os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
        pickles = _repo_pickles(model, sha, folder)
        if pickles:
            raise HubModelError(
                f"--model {model.uri} (commit {sha}) holds only pickle weights ({', '.join(pickles)}); refusing "
                "to load them because unpickling can run arbitrary code. Use a revision with model.safetensors.")
        raise HubModelError(f"--model {model.uri} (commit {sha}) has no {WEIGHTS_FILE}")
    try:
        info = inspect_checkpoint(folder)
    except CheckpointError as e:
        raise CheckpointError(str(e).replace(folder, pinned.uri)) from e
    model_id = info.config.get("_name_or_path") or model.repo_id
    return dataclasses.replace(info, uri=pinned.uri, model_id=model_id,
                               hub={"repo_id": model.repo_id, "revision": model.revision, "commit": sha})


def inspect_model(value: str, storage_options: dict | None = None) -> CheckpointInfo:
    """``--model`` as given: a hub model id (see the module docstring) or a checkpoint directory."""
    model = parse_hub_model(value)
    if model is None:
        return inspect_checkpoint(value, storage_options)
    try:
        return inspect_hub_model(model)
    except HubModelError as e:
        if value.startswith(HUB_SCHEME):
            raise
        raise HubModelError(f"{e}; nor is {value} a local checkpoint directory") from e


def fetch_hub_snapshot(uri: str, names: list[str] | tuple[str, ...] = ()) -> str:
    """A worker's local folder of the pinned hub model ``uri`` (``hf://ORG/NAME@<sha>``), from this
    machine's Hugging Face cache, downloaded on a miss. A cached commit that holds every file in
    ``names`` is used without asking the hub (a commit never changes; the caller verifies the
    digests)."""
    model = parse_hub_model(uri)
    if model is None or not model.pinned:
        raise HubModelError(f"{uri}: workers load hub models pinned to a commit (hf://ORG/NAME@<sha>)")
    if names:
        try:
            folder, _ = download_snapshot(model, local_only=True)
            if all(os.path.isfile(os.path.join(folder, n)) for n in names):
                return folder
        except HubModelError:
            pass   # not cached yet
    folder, _ = download_snapshot(model)
    return folder
