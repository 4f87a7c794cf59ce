"""On-disk sweep results: a Zarr store written chunk by chunk, resumable after a SIGKILL.

Layout of a store directory `out/`:
- `gflow_sweep.json`: the manifest (format, config hash, config, layout). Written once, when the
  store is created; a store is created in a temporary sibling directory and moved into place with
  one `os.rename`, so `out/` is either absent or complete.
- `data.zarr/`: a Zarr (v3) group readable by `xarray.open_zarr`, with one flat `run` dimension
  (grid point × member, member fastest) and a `time` dimension. Its Zarr chunks along `run` are
  exactly the sweep's chunks, so two chunks (or two processes) never touch the same file.
- `done/chunk_XXXXXX`: written (via `os.replace`) only after every array of that chunk is on disk.
  A chunk without its marker is recomputed on resume; a chunk with it is never rewritten.
"""

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import message

FORMAT = "gflow-sweep/1"
MANIFEST = "gflow_sweep.json"


class SweepStoreError(ValueError):
    """An output directory that is not (or not this config's) gflow sweep store."""


def _atomic_write_text(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Write `path` all at once (write a temporary file, fsync, `os.replace`)."""
    tmp = (path.parent if tmp_dir is None else tmp_dir) / f".{path.name}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the store at `path`, or a `SweepStoreError` saying what is wrong."""
    path = Path(path)
    manifest = path / MANIFEST
    if not path.is_dir():
        raise SweepStoreError(message("out", "be an existing gflow sweep store", f"{str(path)!r}, which does not exist"))
    if not manifest.is_file():
        raise SweepStoreError(
            message("out", f"be a gflow sweep store (a directory with {MANIFEST})",
                    f"{str(path)!r}, which has no {MANIFEST}",
                    "It is not gflow's: choose another directory; gflow never overwrites it.")
        )
    try:
        spec = json.loads(manifest.read_text())
        if spec.get("format") != FORMAT:
            raise ValueError(f"format {spec.get('format')!r}")
        for key in ("config_hash", "config", "n_runs", "chunk_size", "variables"):
            spec[key]
    except (ValueError, KeyError, TypeError) as e:
        raise SweepStoreError(
            message(f"out ({manifest})", f"hold a readable {FORMAT} manifest", f"a corrupt one ({e})",
                    "Move the directory away and rerun; gflow never overwrites it.")
        ) from None
    return spec


class ZarrStore:
    """The store at `path` for the sweep described by `spec` (created if absent).

    `spec`: JSON-able dict with `config_hash`, `config`, `n_runs`, `chunk_size`, `num_times`,
    `variables` {name: {"dims": [...], "shape": [...] (after run), "dtype": str}} and `attrs`.
    """

    def __init__(self, path: str | os.PathLike, spec: dict[str, Any]):
        import zarr

        self.path = Path(path)
        if not (self.path / MANIFEST).exists():
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                read_manifest(self.path)  # raises: a non-empty directory that is not a store
            self._create(spec)
        found = read_manifest(self.path)
        if found["config_hash"] != spec["config_hash"]:
            raise SweepStoreError(
                message("out", f"hold this sweep's results (config hash {spec['config_hash']}) or nothing",
                        f"{str(self.path)!r} holding another sweep's results (config hash {found['config_hash']})",
                        "Pass a new output directory; the existing results are left untouched.")
            )
        self.spec = found
        self.chunk_size = int(found["chunk_size"])
        self.n_runs = int(found["n_runs"])
        self.done_dir = self.path / "done"
        try:
            self.group = zarr.open_group(str(self.path / "data.zarr"), mode="r+")
            data = self.path / "data.zarr"
            missing = sorted(n for n in found["variables"] if not (data / n / "zarr.json").is_file())
            if missing or not self.done_dir.is_dir():
                raise ValueError(f"missing {missing or 'done/'}")
        except Exception as e:  # zarr raises several kinds for a damaged store
            raise SweepStoreError(
                message(f"out ({self.path})", "hold an intact data.zarr and done/ for its manifest",
                        f"a corrupt store ({type(e).__name__}: {str(e)[:200]})",
                        "Move the directory away and rerun; gflow never overwrites it.")
            ) from None

    def _create(self, spec: dict[str, Any]) -> None:
        import zarr

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.creating"
        try:
            group = zarr.open_group(str(tmp / "data.zarr"), mode="w", zarr_format=3)
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
            with warnings.catch_warnings():  # "consolidated metadata is not in the v3 spec yet"
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(str(tmp / "data.zarr"))
            (tmp / "done").mkdir()
            _atomic_write_text(tmp / MANIFEST, json.dumps(spec, indent=1, sort_keys=True))
            try:
                os.rename(tmp, self.path)  # atomic; onto an empty directory too
            except OSError:
                if not (self.path / MANIFEST).exists():  # not a concurrent creator: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _marker(self, chunk: int) -> Path:
        return self.done_dir / f"chunk_{chunk:06d}"

    def is_done(self, chunk: int) -> bool:
        return self._marker(chunk).exists()

    def write_chunk(self, chunk: int, data: dict[str, np.ndarray]) -> None:
        """Write chunk `chunk` (runs [chunk·C, chunk·C + len)), then mark it done atomically."""
        start = chunk * self.chunk_size
        for name, values in data.items():
            self.group[name][start : start + values.shape[0]] = values
        # The temporary file lives beside done/, so done/ only ever holds complete markers.
        _atomic_write_text(self._marker(chunk), "done\n", tmp_dir=self.path)

    def read(self, name: str) -> np.ndarray:
        return np.asarray(self.group[name][...])


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

    def write_chunk(self, chunk: int, data: dict[str, np.ndarray]) -> None:
        start = chunk * self.chunk_size
        for name, values in data.items():
            self.arrays[name][start : start + values.shape[0]] = values
        self.done.add(chunk)

    def read(self, name: str) -> np.ndarray:
        return self.arrays[name]
