"""The sweep store (format `gflow-sweep/2`), for tools that inspect, verify or fill stores.

`gflow.sweep(…, out=DIR)` writes a store and `gflow.load_sweep(DIR)` reads it; this namespace
is the level below: the manifest, the verified raw arrays, the chunk protocol that several
writers share (claim, write, release), the fingerprint a store is resumed by, and the grid
parser. The layout is described in `ZarrStore`'s module documentation.
"""

from ._sweep.grid import parse_grid as parse_grid
from ._sweep.identity import computation_fingerprint as computation_fingerprint
from ._sweep.store import FORMAT as FORMAT
from ._sweep.store import ZarrStore as ZarrStore
from ._sweep.store import read_manifest as read_manifest
from ._sweep.store import read_store as read_store

__all__ = ["ZarrStore", "read_manifest", "read_store", "computation_fingerprint", "parse_grid", "FORMAT"]
