"""On-disk sweep results: a Zarr store written chunk by chunk, resumable after a SIGKILL.

Layout of a store directory `out/` (format `gflow-sweep/2`):
- `gflow_sweep.json`: the manifest (format, config hash, config, layout). Written once, when the
  store is created; a store is created in a temporary sibling directory
  `.<name>.<uuid>.creating` (holding `creator.json`: pid, host, time) and moved into place with
  one `os.rename`, so `out/` is either absent or complete. Temporary directories left by a killed
  creator (dead pid on this host, or older than an hour) are removed by the next creation.
  `config` is the sweep's identity: grid, keys, times, observables, solver settings, tolerances,
  gflow version, the user's `config` dict and `computation`, a fingerprint of the traced
  per-member computation (make_flow's code and the arrays it closes over, the observables, the
  solver); `config_hash` is its hash. A sweep whose identity differs is refused with a per-key
  diff (see `identity_diff`); `context` records what is informative only (function names,
  jax/diffrax versions).
- `data.zarr/`: a Zarr (v3) group readable by `xarray.open_zarr`, with one flat `run` dimension
  (grid point × member, member fastest) and a `time` dimension. Its Zarr chunks along `run` are
  exactly the sweep's chunks (files `data.zarr/<var>/c/<chunk>[/0…]`), so two chunks (or two
  processes) never touch the same file. Every chunk is written, even when all of it is fill
  (NaN / -100).
- `done/chunk_XXXXXX`: a JSON marker, written (via `os.replace`) only after every array of that
  chunk is on disk and fsynced (files and directories). It records the writer (pid, host, time,
  a per-store-object id), the runs, and per variable the SHA-256 of the chunk's bytes as written
  and the size of each of its files. A chunk without its marker is recomputed on resume; a chunk
  with it is never rewritten — unless it is found damaged: reopening the store for a sweep
  verifies every marked chunk (files present with their sizes, then checksums), drops the
  markers of damaged chunks with a `SweepWarning` and the sweep recomputes them. `load_sweep`
  verifies the same and raises a `SweepStoreError` naming the store, variable, chunk and damage.
- `claims/chunk_XXXXXX.lock`: one lock file per chunk, held with `fcntl.flock` by the writer
  computing that chunk (the file holds its pid, host and time, for information). Two writers on
  one store (two `sweep` calls, processes or threads) thus never compute the same chunk: the
  second takes other chunks, then waits for the first writer's chunks (and computes any it left,
  e.g. when it was killed: the kernel releases the lock of a dead process). Lock files are never
  deleted. On a file system without `flock` the claims are skipped (with a warning): concurrent
  writers may then compute a chunk twice, with identical results.
Format `gflow-sweep/1` (gflow ≤ 0.1.0 before these changes) had plain-text markers and no
claims; such a store is refused with a message saying so.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import message
from .member import _OK_CODES, NOT_RUN

#: Serialises the warning-filter swap around zarr's consolidate_metadata (see `_create`).
_WARNINGS_LOCK = threading.Lock()

FORMAT = "gflow-sweep/2"
MANIFEST = "gflow_sweep.json"
_REQUIRED = ("config_hash", "config", "n_runs", "chunk_size", "n_members", "grid_dims", "grid_shape",
             "variables", "coords", "coord_dims", "attrs")
#: A `.creating` directory older than this (seconds) is stale whoever made it.
CREATING_STALE_S = 3600.0


class SweepStoreError(ValueError):
    """An output directory that is not (or not this config's, or a damaged) gflow sweep store."""


class SweepWarning(UserWarning):
    """A sweep finished with something to report: failed members (the rest were kept), damaged
    chunks dropped for recomputation, a `chunk_size` ignored on resume, an incomplete store."""


def _atomic_write_text(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Write `path` all at once (write a temporary file, fsync, `os.replace`)."""
    tmp = (path.parent if tmp_dir is None else tmp_dir) / f".{path.name}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}


def _short(value: Any, n: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


def json_normal(value: Any) -> Any:
    """`value` as it reads back from the manifest (tuples -> lists, non-JSON -> str)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def identity_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """What differs between two sweep identities (the manifest's `config`), one line per key."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                lines.append(f"`{path}` removed (was {_short(old[key])})")
            elif key not in old:
                lines.append(f"`{path}` added ({_short(new[key])})")
            elif path == "computation":
                if old[key] != new[key]:
                    lines.append("the computation (make_flow's code or the data it closes over, the observables "
                                 "or the solver) changed")
            else:
                lines.extend(identity_diff(old[key], new[key], path))
        return lines
    if old != new:
        return [f"`{prefix}` changed: {_short(old)} -> {_short(new)}"]
    return []


def read_manifest(path: str | os.PathLike, name: str = "out") -> dict[str, Any]:
    """The manifest of the store at `path`, or a `SweepStoreError` saying what is wrong (the
    store is called `name` in the message: the argument or command-line name)."""
    path = Path(path)
    manifest = path / MANIFEST
    if not path.exists():
        raise SweepStoreError(message(name, "be an existing gflow sweep store", f"{str(path)!r}, which does not exist"))
    if not path.is_dir():
        raise SweepStoreError(message(name, "be a gflow sweep store directory",
                                      f"{str(path)!r}, which is a file, not a directory"))
    if not manifest.is_file():
        raise SweepStoreError(
            message(name, f"be a gflow sweep store (a directory with {MANIFEST})",
                    f"{str(path)!r}, which has no {MANIFEST}",
                    "It is not gflow's: choose another directory; gflow never overwrites it.")
        )
    try:
        spec = json.loads(manifest.read_text())
        if not isinstance(spec, dict):
            raise ValueError(f"a JSON {type(spec).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise SweepStoreError(
            message(f"{name} ({manifest})", f"hold a readable {FORMAT} manifest", f"a corrupt one ({e})",
                    "Move the directory away and rerun; gflow never overwrites it.")
        ) from None
    found = spec.get("format")
    if found != FORMAT:
        older = isinstance(found, str) and re.fullmatch(r"gflow-sweep/1", found)
        raise SweepStoreError(
            message(name, f"be a {FORMAT} store", f"{str(path)!r} in format {found!r}" +
                    (", written by an older gflow" if older else ""),
                    "Read it with the gflow version that wrote it, or rerun the sweep into a new directory."
                    if older else "Move the directory away and rerun; gflow never overwrites it.")
        )
    missing = [key for key in _REQUIRED if key not in spec]
    if missing:
        raise SweepStoreError(
            message(f"{name} ({manifest})", f"hold a complete {FORMAT} manifest", f"one lacking the keys {missing}",
                    "Move the directory away and rerun; gflow never overwrites it.")
        )
    return spec


def _chunk_files(data: Path, var: str, chunk: int) -> list[Path]:
    """The files of chunk `chunk` of variable `var` (zarr v3 default keys `<var>/c/<chunk>[/0…]`)."""
    p = data / var / "c" / str(chunk)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.endswith(".partial"))
    return []


def _checksum(values: np.ndarray) -> str:
    a = np.ascontiguousarray(values)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _runs_text(spec: dict, chunk: int) -> str:
    c, n = int(spec["chunk_size"]), int(spec["n_runs"])
    return f"runs {chunk * c}–{min((chunk + 1) * c, n) - 1}"


def _damage_error(name: str, path: Path, spec: dict, damaged: list[tuple[str, int, str]]) -> SweepStoreError:
    lines = [("" if var == "(all)" else f"variable `{var}`, ") + f"chunk {c} ({_runs_text(spec, c)}) is damaged ({why})"
             for var, c, why in damaged[:5]]
    more = f"; … and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    return SweepStoreError(
        message(name, "hold intact data for every chunk marked done",
                f"store {str(path)!r}: " + "; ".join(lines) + more,
                "Rerun the same sweep into it: damaged chunks are dropped and recomputed, the others kept.")
    )


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("variables"), dict) else None


def _open_group(path: Path, mode: str):
    import zarr

    return zarr.open_group(str(path), mode=mode, zarr_format=3)


def check_chunks(path: Path, spec: dict, chunks, *, full: bool, group=None,
                 into: dict[str, np.ndarray] | None = None) -> list[tuple[str, int, str]]:
    """Damage of the marked `chunks` of the store at `path`: [(variable, chunk, what)].

    Cheap: the marker is readable and every file it lists is there with its size. `full`: also
    each variable's chunk reads back with the recorded checksum (one read per variable; chunk by
    chunk if that fails, to name the unreadable chunk); the values read go into
    `into[variable]` (run-major arrays) when given.
    """
    damaged, records = [], {}
    c_size, n_runs = int(spec["chunk_size"]), int(spec["n_runs"])
    for c in chunks:
        marker = _read_marker(path / "done" / f"chunk_{c:06d}")
        if marker is None:
            damaged.append(("(all)", c, f"unreadable marker done/chunk_{c:06d}"))
            continue
        for var in spec["variables"]:
            rec = marker["variables"].get(var)
            if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict) or not rec["files"]:
                damaged.append((var, c, f"no files recorded for it in its marker done/chunk_{c:06d}"))
                continue
            bad = None
            for rel, size in sorted(rec["files"].items()):
                f = path / rel
                if not f.is_file():
                    bad = f"missing file {rel}"
                elif f.stat().st_size != size:
                    bad = f"file {rel} has {f.stat().st_size} bytes, {size} were written"
                if bad:
                    damaged.append((var, c, bad))
                    break
            else:
                records[var, c] = rec
    if not full:
        return damaged
    if group is None:
        group = _open_group(path / "data.zarr", "r")
    for var, dv in spec["variables"].items():
        todo = sorted(c for v, c in records if v == var)
        if not todo:
            continue
        dtype = np.dtype(dv["dtype"])
        try:
            whole = np.asarray(group[var][...])
        except Exception:  # some chunk is unreadable: find which, below
            whole = None
        for c in todo:
            sl = slice(c * c_size, min((c + 1) * c_size, n_runs))
            if whole is not None:
                values = whole[sl]
            else:
                try:
                    values = np.asarray(group[var][sl])
                except Exception as e:  # zarr/numcodecs raise several kinds for a damaged chunk
                    damaged.append((var, c, f"unreadable: {type(e).__name__}: {str(e)[:120]}"))
                    continue
            if _checksum(values.astype(dtype, copy=False)) != records[var, c].get("sha256"):
                damaged.append((var, c, "its data does not match the checksum written with it"))
            elif into is not None:
                into[var][sl] = values
    damaged.sort(key=lambda d: (d[1], d[0]))
    return damaged


def check_variables(path: Path, spec: dict, name: str) -> None:
    """Raise a named `SweepStoreError` if `data.zarr`, a variable's array or `done/` is missing."""
    data = path / "data.zarr"
    missing = [f"data.zarr/{var}" for var in spec["variables"] if not (data / var / "zarr.json").is_file()]
    if not (data / "zarr.json").is_file():
        missing = ["data.zarr"]
    if not (path / "done").is_dir():
        missing.append("done/")
    if missing:
        raise SweepStoreError(
            message(name, "hold an intact data.zarr and done/ for its manifest",
                    f"store {str(path)!r} missing {', '.join(missing)}",
                    "Move the directory away and rerun; gflow never overwrites it.")
        )


def marked_chunks(path: Path) -> list[int]:
    out = []
    for f in os.listdir(path / "done"):
        m = re.fullmatch(r"chunk_(\d{6})", f)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


class ZarrStore:
    """The store at `path` for the sweep described by `spec` (created if absent).

    `spec`: JSON-able dict with `config_hash`, `config`, `n_runs`, `chunk_size`, `num_times`,
    `variables` {name: {"dims": [...], "shape": [...] (after run), "dtype": str}} and `attrs`.
    Opening an existing store verifies its marked chunks (`verify`) and drops the markers of
    damaged ones (with a `SweepWarning`), so that they are recomputed.

    Chunk protocol (independent of how chunks are computed): `claim(c)` (non-blocking, or
    `wait=True`), then `is_done(c)` (another writer may have finished it), `write_chunk(c, data)`,
    `release(c)`.
    """

    def __init__(self, path: str | os.PathLike, spec: dict[str, Any], *, name: str = "out", verify: str = "full"):
        self.path = Path(path)
        self.name = name
        if not (self.path / MANIFEST).exists():
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                read_manifest(self.path, name)  # raises: a non-empty directory that is not a store
            self._create(spec)
        found = read_manifest(self.path, name)
        if found["config_hash"] != spec["config_hash"]:
            diff = identity_diff(found["config"], json_normal(spec["config"]))
            was, now = found.get("context") or {}, spec.get("context") or {}
            moved = [f"{k} {was.get(k)} -> {now.get(k)}" for k in ("jax_version", "diffrax_version")
                     if was.get(k) != now.get(k)]
            if moved and any(line.startswith("the computation") for line in diff):
                diff.append(f"(the store was written with other versions: {', '.join(moved)})")
            raise SweepStoreError(
                message(name, "hold this sweep's results or nothing",
                        f"{str(self.path)!r} holding another sweep's results: "
                        + ("; ".join(diff) if diff else f"config hash {found['config_hash']}, "
                           f"not {spec['config_hash']}"),
                        "Pass a new output directory; the existing results are left untouched.")
            )
        self.spec = found
        self.chunk_size = int(found["chunk_size"])
        self.n_runs = int(found["n_runs"])
        self.done_dir = self.path / "done"
        self.claims_dir = self.path / "claims"
        self.writer_id = uuid.uuid4().hex
        self._locks: dict[int, int] = {}
        self._flock_ok = True
        check_variables(self.path, found, name)
        try:
            self.group = _open_group(self.path / "data.zarr", "r+")
        except Exception as e:  # zarr raises several kinds for a damaged store
            raise SweepStoreError(
                message(name, "hold an intact data.zarr for its manifest",
                        f"store {str(self.path)!r} with an unreadable one ({type(e).__name__}: {str(e)[:200]})",
                        "Move the directory away and rerun; gflow never overwrites it.")
            ) from None
        self.claims_dir.mkdir(exist_ok=True)
        if verify != "none":
            self.repair(full=verify == "full")

    # -- creation -------------------------------------------------------------------------------

    def _clean_stale_creating(self) -> None:
        host = socket.gethostname()
        for tmp in self.path.parent.glob(f".{self.path.name}.*.creating"):
            try:
                info = json.loads((tmp / "creator.json").read_text())
                dead = info.get("host") == host and not _pid_alive(int(info["pid"]))
                age = time.time() - float(info["time"])
            except (OSError, ValueError, KeyError, TypeError):
                dead = False
                try:
                    age = time.time() - tmp.stat().st_mtime
                except OSError:
                    continue
            if dead or age > CREATING_STALE_S:
                shutil.rmtree(tmp, ignore_errors=True)

    def _create(self, spec: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clean_stale_creating()
        tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.creating"
        try:
            tmp.mkdir()
            (tmp / "creator.json").write_text(json.dumps(_holder()))
            group = _open_group(tmp / "data.zarr", "w")
            n, c = int(spec["n_runs"]), int(spec["chunk_size"])
            for name, var in spec["variables"].items():
                shape = tuple(var["shape"])
                dtype = np.dtype(var["dtype"])
                fill = np.nan if np.issubdtype(dtype, np.floating) else -100
                group.create_array(
                    name, shape=(n, *shape), chunks=(c, *shape), dtype=dtype, fill_value=fill,
                    dimension_names=("run", *var["dims"]),
                )
            for name, values in spec["coords"].items():
                values = np.asarray(values)
                arr = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                         dimension_names=(spec["coord_dims"][name],))
                arr[...] = values
            group.attrs.update(spec["attrs"])
            import zarr

            # "consolidated metadata is not in the v3 spec yet". `catch_warnings` swaps the
            # process-wide filters, so two threads creating stores at once must not interleave
            # (one would restore the filters while the other's warning is in flight).
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(str(tmp / "data.zarr"), zarr_format=3)
            (tmp / "done").mkdir()
            (tmp / "claims").mkdir()
            (tmp / "creator.json").unlink()
            _atomic_write_text(tmp / MANIFEST, json.dumps(spec, indent=1, sort_keys=True))
            try:
                os.rename(tmp, self.path)  # atomic; onto an empty directory too
            except OSError:
                if not (self.path / MANIFEST).exists():  # not a concurrent creator: a real error
                    raise
            _fsync_dir(self.path.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- chunks ---------------------------------------------------------------------------------

    def _marker(self, chunk: int) -> Path:
        return self.done_dir / f"chunk_{chunk:06d}"

    def is_done(self, chunk: int) -> bool:
        """True if chunk `chunk` is marked done (and verified)."""
        return self._marker(chunk).exists()

    def repair(self, *, full: bool = True) -> list[tuple[str, int, str]]:
        """Verify the marked chunks; drop the markers of damaged ones (warning) so they are redone.

        A chunk another writer holds is left alone (it is being rewritten)."""
        damaged = check_chunks(self.path, self.spec, marked_chunks(self.path), full=full, group=self.group)
        dropped = []
        for c in sorted({c for _, c, _ in damaged}):
            if not self.claim(c):
                continue
            try:
                if check_chunks(self.path, self.spec, [c], full=full, group=self.group):  # still damaged
                    self._marker(c).unlink(missing_ok=True)
                    dropped.append(c)
            finally:
                self.release(c)
        if dropped:
            _fsync_dir(self.done_dir)
            lines = [f"variable `{v}`, chunk {c} ({_runs_text(self.spec, c)}): {why}" for v, c, why in damaged
                     if c in dropped][:5]
            warnings.warn(f"store {str(self.path)!r}: {len(dropped)} damaged chunk(s) dropped and to be recomputed: "
                          + "; ".join(lines), SweepWarning, stacklevel=3)
        return [d for d in damaged if d[1] in dropped]

    def claim(self, chunk: int, *, wait: bool = False) -> bool:
        """Hold chunk `chunk` for this writer (an exclusive `flock`); False if another holds it
        (with `wait=True`: block until it is free). Reentrant within this store object: no."""
        if chunk in self._locks:
            return True
        if not self._flock_ok:
            self._locks[chunk] = -1
            return True
        try:
            import fcntl
        except ImportError:  # not POSIX: no claims
            self._flock_ok = False
            return self.claim(chunk)
        path = self.claims_dir / f"chunk_{chunk:06d}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            warnings.warn(f"store {str(self.path)!r}: this file system has no flock ({e}); concurrent writers "
                          "may compute a chunk twice (with identical results)", SweepWarning, stacklevel=2)
            self._flock_ok = False
            return self.claim(chunk)
        try:  # who holds it, for information only
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps({**_holder(), "thread": threading.get_ident()}) + "\n").encode(), 0)
        except OSError:
            pass
        self._locks[chunk] = fd
        return True

    def release(self, chunk: int) -> None:
        """Give up this writer's claim on chunk `chunk`."""
        fd = self._locks.pop(chunk, None)
        if fd is not None and fd >= 0:
            os.close(fd)  # closing the descriptor releases the flock

    def release_all(self) -> None:
        """Give up every claim this writer holds."""
        for chunk in list(self._locks):
            self.release(chunk)

    def write_chunk(self, chunk: int, data: dict[str, np.ndarray]) -> None:
        """Write chunk `chunk` (runs [chunk·C, chunk·C + len)), fsync it, then mark it done
        atomically (the marker records the writer, checksums and file sizes)."""
        start = chunk * self.chunk_size
        data_dir = self.path / "data.zarr"
        record = {}
        for name, values in data.items():
            values = np.asarray(values, dtype=np.dtype(self.spec["variables"][name]["dtype"]))
            array = self.group[name].with_config({"write_empty_chunks": True})
            array[start : start + values.shape[0]] = values
            files = _chunk_files(data_dir, name, chunk)
            dirs = set()
            for f in files:
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                d = f.parent
                while d != data_dir and d not in dirs:
                    dirs.add(d)
                    d = d.parent
            for d in dirs:
                _fsync_dir(d)
            record[name] = {"sha256": _checksum(values),
                            "files": {str(f.relative_to(self.path)): f.stat().st_size for f in files}}
        stop = start + next(iter(data.values())).shape[0]
        marker = {"writer": {**_holder(), "id": self.writer_id}, "runs": [start, stop], "variables": record}
        # The temporary file lives beside done/, so done/ only ever holds complete markers.
        _atomic_write_text(self._marker(chunk), json.dumps(marker, sort_keys=True), tmp_dir=self.path)
        _fsync_dir(self.done_dir)

    def read(self, name: str) -> np.ndarray:
        """Variable `name` over all runs (unmarked chunks hold NaN / -100)."""
        return np.asarray(self.group[name][...])


def read_store(path: str | os.PathLike, *, name: str = "path") -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest, {variable: array}) of the store at `path`, every marked chunk verified (a
    damaged one raises a `SweepStoreError` naming it); unmarked chunks hold NaN / -100."""
    path = Path(path)
    spec = read_manifest(path, name)
    check_variables(path, spec, name)
    try:
        group = _open_group(path / "data.zarr", "r")
    except Exception as e:
        raise SweepStoreError(
            message(name, "hold an intact data.zarr for its manifest",
                    f"store {str(path)!r} with an unreadable one ({type(e).__name__}: {str(e)[:200]})",
                    "Move the directory away and rerun the sweep into a new directory.")
        ) from None
    arrays = {}
    for var, dv in spec["variables"].items():  # data of an unmarked chunk may be half written
        dtype = np.dtype(dv["dtype"])
        fill = np.nan if np.issubdtype(dtype, np.floating) else -100
        arrays[var] = np.full((int(spec["n_runs"]), *dv["shape"]), fill, dtype)
    damaged = check_chunks(path, spec, marked_chunks(path), full=True, group=group, into=arrays)
    if damaged:
        raise _damage_error(name, path, spec, damaged)
    return spec, arrays


class MemoryStore:
    """The same interface, in memory (a sweep without `out`)."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.chunk_size = int(spec["chunk_size"])
        self.n_runs = int(spec["n_runs"])
        self.arrays = {}
        for name, var in spec["variables"].items():
            dtype = np.dtype(var["dtype"])
            fill = np.nan if np.issubdtype(dtype, np.floating) else -100
            self.arrays[name] = np.full((self.n_runs, *var["shape"]), fill, dtype)
        self.done = set()

    def is_done(self, chunk: int) -> bool:
        return chunk in self.done

    def claim(self, chunk: int, *, wait: bool = False) -> bool:
        return True

    def release(self, chunk: int) -> None:
        pass

    def release_all(self) -> None:
        pass

    def write_chunk(self, chunk: int, data: dict[str, np.ndarray]) -> None:
        start = chunk * self.chunk_size
        for name, values in data.items():
            self.arrays[name][start : start + values.shape[0]] = values
        self.done.add(chunk)

    def read(self, name: str) -> np.ndarray:
        return self.arrays[name]


def labelled(spec: Mapping, arrays: Mapping[str, np.ndarray], *, allow_partial: bool, name: str = "sweep store"):
    """The flat run-major arrays as an xarray Dataset with dims (*grid, member, …)."""
    import xarray as xr

    grid_dims = list(spec["grid_dims"])
    grid_shape = tuple(spec["grid_shape"])
    n_members = int(spec["n_members"])
    results = np.asarray(arrays["result"])
    if not allow_partial and np.any(results == NOT_RUN):
        missing = int(np.sum(results == NOT_RUN))
        raise ValueError(message(name, "be a complete sweep store", f"{missing} runs not done yet",
                                 "Rerun the same sweep command to finish it, or pass allow_partial=True."))
    data_vars = {}
    for name, var in spec["variables"].items():
        a = np.asarray(arrays[name]).reshape(*grid_shape, n_members, *var["shape"])
        data_vars[name] = ([*grid_dims, "member", *var["dims"]], a)
    data_vars["succeeded"] = ([*grid_dims, "member"], np.isin(results, _OK_CODES).reshape(*grid_shape, n_members))
    coords = {"time": np.asarray(spec["coords"]["time"]), "member": np.arange(n_members)}
    for dim, values in spec["config"]["grid"]:
        for name, v in values.items():
            coords[name] = (dim, np.asarray(v))
    attrs = {**spec["attrs"], "chunk_size": int(spec["chunk_size"])}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def load_sweep(path: str | os.PathLike, *, allow_partial: bool = False, name: str = "path"):
    """The sweep stored at `path` as an `xarray.Dataset`.

    Dims: the grid axes, `member`, `time` (and `<name>_dimK` for observables with extra axes);
    coordinates: the grid values, `member`, `time`; attrs: the sweep config (JSON), its hash,
    gflow/jax/diffrax versions, dtype, matmul precision. `succeeded` marks members whose solve
    reached t1. Unfinished runs raise unless `allow_partial=True` (then they hold NaN/-100).
    Every chunk marked done is verified against the checksums written with it: a damaged store
    raises a `SweepStoreError` naming the variable, chunk and damage (rerunning the sweep into
    it recomputes the damaged chunks). Errors call the store `name` (e.g. "DIR" for the CLI).
    """
    spec, arrays = read_store(path, name=name)
    return labelled(spec, arrays, allow_partial=allow_partial, name=name)
