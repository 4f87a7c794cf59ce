"""gflow run / sweep / plot, the README's Sweeps examples, kill-and-resume, 2 devices, 2 processes.

One config (examples/two_layer_sweep.toml, 64 members) serves every test: the README's CLI block
writes the reference store in-process; subprocesses (kept to four: their jax import and compile
dominate) redo it killed-and-resumed, on 2 fake devices and as 2 jax.distributed processes.
"""

import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO

from gflow import load_sweep
from gflow.__main__ import main

EXAMPLE = REPO / "examples" / "two_layer_sweep.toml"


def _sweeps_section() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("\n## Sweeps"):]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _sweeps_section(), flags=re.S)


def _env(**extra):
    """The subprocess environment: this run's (the compile cache directory, conftest's XLA
    optimisation level, so the subprocesses reuse the cache) and `extra`'s XLA flags, nothing
    else of XLA_FLAGS."""
    keep = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith("--xla_backend_optimization_level")]
    flags = " ".join([*keep, extra.pop("XLA_FLAGS", "")]).strip()
    return {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", **extra, "XLA_FLAGS": flags}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "gflow", *args]


def _assert_same_store(a, b):
    ref, other = load_sweep(a), load_sweep(b)
    assert ref["loss"].shape == other["loss"].shape == (2, 32, 41)
    for name in ("loss", "final_loss", "t_final", "plateau_exit_time", "time_to_loss_below"):
        # Each member is the same arithmetic whatever the batch/device/process: ≤ 1e-12.
        np.testing.assert_allclose(other[name].values, ref[name].values, rtol=1e-12, atol=1e-15)
    for name in ("num_steps", "result"):
        np.testing.assert_array_equal(other[name].values, ref[name].values)
    assert ref.attrs["config_hash"] == other.attrs["config_hash"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Run the README's CLI block (as written, paths resolved) in a fresh directory."""
    cwd = tmp_path_factory.mktemp("readme_cli")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        (block,) = _blocks("bash")
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            assert argv[0] == "gflow"
            main([a.replace("examples/", f"{REPO}/examples/") for a in argv[1:]] + (["--no-progress"] if argv[1] in ("sweep", "run") else []))
    finally:
        os.chdir(old)
    return cwd / "sweep_results"


def test_readme_cli_block_writes_store_and_plots(reference, capsys):
    ds = load_sweep(reference)
    assert bool(ds["succeeded"].all())
    assert ds["loss"].dims == ("init_scale", "member", "time")
    assert ds.attrs["dtype"] == "float64" and ds.attrs["matmul_precision"]
    for png in ("loss_quantiles.png", "final_loss.png", "event_times.png"):
        assert (reference / "plots" / png).read_bytes()[:4] == b"\x89PNG"


def test_run_prints_the_solve(capsys):
    main(["run", str(EXAMPLE), "--no-progress"])
    out = capsys.readouterr().out
    assert re.search(r"loss: [0-9.e-]+ at t=0 -> [0-9.e-]+ at t=20 \(\d+ steps\)", out)


def test_kill_and_resume_loses_nothing(reference, tmp_path):
    out = tmp_path / "killed"
    cmd = ["sweep", str(EXAMPLE), "--out", str(out), "--chunk-size", "2", "--no-progress"]
    log = tmp_path / "killed.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(_cli(*cmd), env=_env(), stdout=f, stderr=subprocess.STDOUT)
    done = out / "done"
    deadline = time.monotonic() + 300
    try:
        while not (done.is_dir() and os.listdir(done)):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.02))  # anywhere in the next chunks: mid-solve or mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert all(name.startswith("chunk_") for name in os.listdir(done))  # only complete markers
    n_done = len(os.listdir(done))
    assert 1 <= n_done < 32, "the sweep finished before the kill; make its chunks slower"
    with pytest.raises(ValueError, match="runs not done yet"):
        load_sweep(out)
    main(cmd)  # the same command resumes
    assert len(os.listdir(done)) == 32
    _assert_same_store(reference, out)


def test_two_devices_and_two_processes_match_one(reference, tmp_path):
    two_dev = tmp_path / "two_devices"
    # Chunks of 15 on 2 devices: each device batch is padded to 16 (one repeated run, dropped).
    dev = subprocess.run(_cli("sweep", str(EXAMPLE), "--out", str(two_dev), "--no-progress", "--chunk-size", "15"),
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
                         capture_output=True, text=True, timeout=300)
    assert dev.returncode == 0, dev.stdout + dev.stderr
    _assert_same_store(reference, two_dev)

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    two_proc = tmp_path / "two_processes"
    workers = tmp_path / "workers"
    commands = [_cli("sweep", str(EXAMPLE), "--out", str(two_proc), "--no-progress", "--coordinator",
                     f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)) for i in range(2)]
    # Independent workers sharing only the store (a Slurm array): slices 0/2 and 1/2, and slice
    # 0/2 started twice by mistake: the chunk locks keep the store that of one process.
    commands += [_cli("sweep", str(EXAMPLE), "--out", str(workers), "--no-progress", "--chunk-size", "8",
                      "--worker", w) for w in ("0/2", "1/2", "0/2")]
    logs = [tmp_path / f"process{i}.log" for i in range(len(commands))]
    procs = []
    for command, log in zip(commands, logs):
        with open(log, "wb") as f:
            procs.append(subprocess.Popen(command, env=_env(), stdout=f, stderr=subprocess.STDOUT))
    for p, log in zip(procs, logs):
        assert p.wait(timeout=300) == 0, log.read_text()
    _assert_same_store(reference, two_proc)
    _assert_same_store(reference, workers)
    writers = {json.loads(m.read_text())["writer"]["pid"] for m in (workers / "done").iterdir()}
    assert len(list((workers / "done").iterdir())) == 8 and 1 <= len(writers) <= 3
    with pytest.raises(SystemExit):  # I/N with I ≥ N is refused by argparse
        main(["sweep", str(EXAMPLE), "--out", str(tmp_path / "w"), "--worker", "2/2"])


def test_readme_python_block_runs(tmp_path, monkeypatch):
    (block,) = _blocks("python")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(block, "README.md#sweeps", "exec"), namespace)
    ds = namespace["ds"]
    assert ds["loss"].dims == ("init_scale", "size", "member", "time")
    assert ds["width"].values.tolist() == [4, 8] and ds["n"].dims == ("size",)
    assert ds.sizes["member"] == 100 and bool(ds["succeeded"].all())
    assert (tmp_path / "sweep_py" / "gflow_sweep.json").is_file()


def test_cli_errors_are_named(reference, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('loss = "squared_error"', 'loss = "squared_eror"'))
    with pytest.raises(SystemExit, match=r"`loss` must name a registered entry.*'squared_eror'"):
        main(["sweep", str(bad), "--out", str(tmp_path / "x")])
    other = tmp_path / "other.toml"
    other.write_text(EXAMPLE.read_text().replace("members = 32", "members = 8"))
    before = sorted(p.name for p in reference.rglob("*"))
    with pytest.raises(SystemExit, match="another sweep's results"):
        main(["sweep", str(other), "--out", str(reference), "--no-progress"])
    assert sorted(p.name for p in reference.rglob("*")) == before
    with pytest.raises(SystemExit, match="has no gflow_sweep.json"):
        main(["plot", str(tmp_path)])
