"""Pre-training done once per pre-training configuration: a cache of pre-trained encoders.

Trials that differ only in fine-tuning settings (`raysearch.train.config.stage_of`) would
pre-train the same encoder again. The cache keeps the best pre-trained encoder of each
pre-training configuration in the run's storage (a local path or a bucket URI, read and written
through pyarrow.fs like `raysearch.runs`):

    <run_dir>/encoders/<key>/encoder.pt     state dict of the encoder (torch.save; weights_only)
    <run_dir>/encoders/<key>/record.json    the key's fields, pre-training metrics, source, wall time

`record.json` is written last: an entry without it is unfinished and never read. The key is a hash
of everything that determines the encoder (`key_fields`): the preset-resolved model config
(pre-training fields only), a fingerprint of the data, the pre-training recipe fields (epochs and
seed included; `init_from` by its file's content), the number of workers (it changes batches and
BatchNorm statistics) and `CACHE_FORMAT_VERSION`.

Two trials with the same key must not both pre-train. They agree through `Claims`, one named Ray
actor per cache location that the search driver starts (`start_claims`): a trial claims the key,
pre-trains, publishes (writes the entry) and releases; the others wait until the entry exists.
A claim is a lease the claimant renews from a background thread, so a trial killed without
releasing (SIGKILL, a lost node) loses its claim after `LEASE_S` and a waiting trial takes it over.
Without that actor (a trial run in-process) the claims are this process's own.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs
import torch

from ..contract import CACHED_ENCODER_FILE, ENCODER_RECORD_FILE
from ..errors import UserInputError, first_line
from .config import TrialConfig, pretrain_key_fields
from .distributed import WorkerContext

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
LEASE_S = 30.0          # a claim not renewed for this long belongs to a trial that died
RENEW_S = 5.0           # how often a pre-training trial renews its claim
POLL_S = 0.5            # how often a waiting trial looks again
NAMESPACE = "raysearch"

# What Claims.acquire answers.
MINE, WAIT, PUBLISHED = "mine", "wait", "published"


# -- the key -------------------------------------------------------------------------------------
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UserInputError(f"init_from {path}: cannot be read ({exc.strerror})") from None
    return digest.hexdigest()


def data_fingerprint(dataset) -> dict[str, Any]:
    """The dataset manifest's hash (its parsed JSON, so formatting does not count) and split sizes."""
    manifest = json.loads((Path(dataset.path) / "manifest.json").read_text())
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return {"manifest_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "splits": {name: info.count for name, info in sorted(dataset.manifest.splits.items())}}


def key_fields(trial: TrialConfig, model_config, dataset, workers: int) -> dict[str, Any]:
    """Everything that determines the pre-trained encoder of `trial` (module docstring)."""
    model_names, train_names = pretrain_key_fields()
    config = asdict(model_config)
    train = {name: getattr(trial.train, name) for name in train_names}
    train["lr"] = trial.train.lr_for(model_config.variant)  # None resolves by variant
    if train.get("init_from"):
        train["init_from"] = {"sha256": _file_digest(train["init_from"])}
    return {"version": CACHE_FORMAT_VERSION, "model": {name: config[name] for name in model_names},
            "train": train, "data": data_fingerprint(dataset), "workers": int(workers)}


def encoder_key(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- who pre-trains which key ------------------------------------------------------------------------
class Claims:
    """Claims on keys: at most one live owner per key; a key once published is never claimed again.

    Every method returns at once (waiting is the caller's poll loop), so one actor serves a whole
    search. `owner` is a string the claimant chooses (one per trial attempt)."""

    def __init__(self, lease_s: float = LEASE_S):
        self._lease_s = lease_s
        self._claims: dict[str, tuple[str, float]] = {}   # key -> (owner, lease end, monotonic)
        self._published: set[str] = set()

    def acquire(self, key: str, owner: str) -> str:
        """MINE (the caller pre-trains), WAIT (a live owner does), or PUBLISHED."""
        if key in self._published:
            return PUBLISHED
        holder = self._claims.get(key)
        now = time.monotonic()
        if holder is None or holder[0] == owner or holder[1] < now:
            self._claims[key] = (owner, now + self._lease_s)
            return MINE
        return WAIT

    def status(self, key: str, owner: str) -> str:
        """What `acquire` would answer, without claiming: for workers that follow their rank 0."""
        if key in self._published:
            return PUBLISHED
        holder = self._claims.get(key)
        return MINE if holder is not None and holder[0] == owner else WAIT

    def renew(self, key: str, owner: str) -> bool:
        holder = self._claims.get(key)
        if holder is None or holder[0] != owner:
            return False
        self._claims[key] = (owner, time.monotonic() + self._lease_s)
        return True

    def publish(self, key: str, owner: str) -> None:
        self._published.add(key)
        self._claims.pop(key, None)

    def release(self, key: str, owner: str) -> None:
        holder = self._claims.get(key)
        if holder is not None and holder[0] == owner:
            del self._claims[key]


class ClaimsLike(Protocol):
    def acquire(self, key: str, owner: str) -> str: ...

    def status(self, key: str, owner: str) -> str: ...

    def renew(self, key: str, owner: str) -> bool: ...

    def publish(self, key: str, owner: str) -> None: ...

    def release(self, key: str, owner: str) -> None: ...


class _RemoteClaims:
    """The search's Claims actor, called like a local object."""

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, name: str):
        import ray

        method = getattr(self._handle, name)
        return lambda *args: ray.get(method.remote(*args))


def claims_actor_name(location: str) -> str:
    return "raysearch-encoders-" + hashlib.sha1(location.rstrip("/").encode()).hexdigest()[:16]


def start_claims(location: str):
    """The Claims actor of a cache location, started by the process that runs the search (or
    `raysearch train`) and living as long as it does. Keep the returned handle.

    It is pinned to that process's node: placed anywhere, it could land on a worker node, and
    losing that node would fail every trial that asks it about a key (the search's own node is
    the one a search cannot survive losing anyway)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(Claims).options(name=claims_actor_name(location), namespace=NAMESPACE, get_if_exists=True,
                                       num_cpus=0, scheduling_strategy=here)
    return actor.remote()


def find_claims(location: str) -> ClaimsLike:
    """The Claims actor of `location` when one runs in this Ray cluster, else this process's own."""
    try:
        import ray

        if ray.is_initialized():
            return _RemoteClaims(ray.get_actor(claims_actor_name(location), namespace=NAMESPACE))
    except ValueError:  # no such actor: a trial outside a search, or a driver that has not started one
        pass
    return _LOCAL.setdefault(location, Claims())


_LOCAL: dict[str, Claims] = {}


# -- the cache ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedEncoder:
    key: str
    state: dict[str, torch.Tensor]
    record: dict[str, Any]


@dataclass(frozen=True)
class EncoderCacheSpec:
    """What travels to a trial: where the cache is (path or URI). The Claims actor is found by it."""

    location: str


class EncoderCache:
    """One trial's view of the cache: `acquire` a key (a cached encoder, or the claim to pre-train
    it), then `publish` the encoder or `release` the claim."""

    def __init__(self, location: str, claims: ClaimsLike | None = None, source: str = "",
                 poll_s: float = POLL_S, renew_s: float = RENEW_S):
        self.location = location.rstrip("/")
        self.claims = claims if claims is not None else find_claims(self.location)
        self.source = source
        self.poll_s, self.renew_s = poll_s, renew_s
        self.owner = ""
        self._claimed: str | None = None
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            self._fs, path = pyarrow.fs.FileSystem.from_uri(
                self.location if "://" in self.location else os.path.abspath(self.location))
        except Exception as exc:  # pyarrow raises several types for bad URIs and missing credentials
            raise UserInputError(f"encoder cache {location}: cannot open ({first_line(exc, 160)})") from None
        self._root = path.rstrip("/")

    @classmethod
    def open(cls, spec: EncoderCacheSpec, source: str = "") -> "EncoderCache":
        return cls(spec.location, source=source)

    # -- storage -----------------------------------------------------------------------------------
    def _entry(self, key: str) -> str:
        return f"{self._root}/{key}"

    def exists(self, key: str) -> bool:
        return self._fs.get_file_info(f"{self._entry(key)}/{ENCODER_RECORD_FILE}").type == pyarrow.fs.FileType.File

    def read(self, key: str, device: torch.device | str = "cpu") -> CachedEncoder | None:
        if not self.exists(key):
            return None
        with self._fs.open_input_stream(f"{self._entry(key)}/{ENCODER_RECORD_FILE}") as f:
            record = json.loads(f.read().decode())
        with self._fs.open_input_stream(f"{self._entry(key)}/{CACHED_ENCODER_FILE}") as f:
            state = torch.load(io.BytesIO(f.read()), map_location=device, weights_only=True)
        return CachedEncoder(key, state, record)

    def _write(self, path: str, data: bytes) -> None:
        if isinstance(self._fs, pyarrow.fs.LocalFileSystem):
            # A reader never sees half a file: write aside, then rename (object stores put whole objects).
            partial = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex}.partial"
            with self._fs.open_output_stream(partial) as f:
                f.write(data)
            self._fs.move(partial, path)
            return
        with self._fs.open_output_stream(path) as f:
            f.write(data)

    # -- one trial's protocol -----------------------------------------------------------------------
    def acquire(self, key: str, ctx: WorkerContext) -> CachedEncoder | None:
        """The cached encoder of `key` (waiting while another trial pre-trains it), or None: this
        trial holds the claim and pre-trains. Every worker of a trial calls it; rank 0 claims, the
        others follow it, and all of them get the same answer."""
        token = uuid.uuid4().int if ctx.is_main else 0
        # Rank 0's token on every worker: the owner of the claim is the whole trial.
        words = ctx.broadcast(torch.tensor([(token >> (32 * i)) & 0xFFFFFFFF for i in range(4)], dtype=torch.int64,
                                           device=ctx.device))
        self.owner = f"{self.source}:{sum(int(w) << (32 * i) for i, w in enumerate(words.tolist())):032x}"
        while True:
            if self.exists(key):
                hit = True
                break
            answer = self.claims.acquire(key, self.owner) if ctx.is_main else self.claims.status(key, self.owner)
            if answer == MINE:
                hit = False
                break
            time.sleep(self.poll_s)
        # Workers leave the loop within a poll of each other; rank 0's answer is the trial's.
        hit = bool(ctx.broadcast(torch.tensor([float(hit)], device=ctx.device)).item())
        if not hit:
            if ctx.is_main:
                self._hold(key)
            return None
        return self.read(key, ctx.device)

    def _hold(self, key: str) -> None:
        self._claimed = key
        self._stop.clear()

        def renew() -> None:
            while not self._stop.wait(self.renew_s):
                try:
                    if not self.claims.renew(key, self.owner):
                        logger.warning("encoder cache: the claim on %s lapsed; another trial may pre-train it too", key)
                except Exception:  # the actor is gone with its driver; this trial ends with it
                    return

        self._renewer = threading.Thread(target=renew, name="encoder-claim", daemon=True)
        self._renewer.start()

    def _drop(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        self._renewer, self._claimed = None, None

    def publish(self, key: str, fields: dict[str, Any], encoder: dict[str, torch.Tensor],
                record: dict[str, Any], ctx: WorkerContext) -> None:
        """Write the entry (rank 0; the first trial to finish a key wins) and give up the claim."""
        if not ctx.is_main:
            return
        try:
            if not self.exists(key):
                self._fs.create_dir(self._entry(key), recursive=True)
                buffer = io.BytesIO()
                torch.save({k: v.detach().cpu() for k, v in encoder.items()}, buffer)
                self._write(f"{self._entry(key)}/{CACHED_ENCODER_FILE}", buffer.getvalue())
                body = {"key": key, "fields": fields, "source": self.source, "created_unix_s": time.time(), **record}
                self._write(f"{self._entry(key)}/{ENCODER_RECORD_FILE}",
                            json.dumps(body, indent=1, default=list).encode())
            self.claims.publish(key, self.owner)
        finally:
            self._drop()

    def release(self) -> None:
        """Give up a claim this trial still holds (it ends without a finished pre-training)."""
        key = self._claimed
        if key is None:
            return
        self._drop()
        try:
            self.claims.release(key, self.owner)
        except Exception:  # the actor is gone; so is every claim it held
            pass


__all__ = ["EncoderCache", "EncoderCacheSpec", "CachedEncoder", "Claims", "key_fields", "encoder_key",
           "start_claims", "find_claims", "CACHE_FORMAT_VERSION"]
