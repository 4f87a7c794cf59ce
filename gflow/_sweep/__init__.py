"""Sweeps: many gradient flows in one compile, resumable stores, independent workers.

- `grid.py`: the grid axes and member keys (shared with the TOML config);
- `member.py`: one member's build, solve and summaries, and the result codes;
- `identity.py`: the sweep's identity (the fingerprint a store is resumed by);
- `run.py`: `sweep` itself (chunks, devices, processes, workers, the store's claims);
- `slots.py`: the lockstep-free slot runner (continuous batching; two pools for "auto");
- `store.py`: the on-disk store (Zarr, manifest, checksums, claims) and `load_sweep`.
Plotting a stored sweep lives in `gflow._plotting` (`plot_sweep`).
"""

from .grid import parse_grid as parse_grid
from .identity import computation_fingerprint as computation_fingerprint
from .member import first_crossing as first_crossing
from .run import SweepError as SweepError
from .run import sweep as sweep
from .store import SweepStoreError as SweepStoreError
from .store import SweepWarning as SweepWarning
from .store import load_sweep as load_sweep
