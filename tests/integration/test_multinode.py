"""Multi-node DDP without SLURM, on localhost: two "nodes" of one CPU process each (gloo).

Launched the two ways a cluster without a scheduler does it, with the commands docs/distributed.md gives:
- once per node with Lightning's general-cluster variables (`MASTER_ADDR`, `MASTER_PORT`,
  `NODE_RANK`; no `LOCAL_RANK`, `WORLD_SIZE` or `RANK`: Lightning derives the world size from
  `--num-nodes x --devices` and starts any further processes of a node itself);
- under `torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --master-addr ... --master-port ...`
  (static rendezvous; Lightning then reads torchrun's RANK, WORLD_SIZE and LOCAL_RANK).

Each finished run's test metrics equal a single-process `--evaluate` of its best checkpoint (as
the 2-process test of tests/integration/test_distributed.py checks for one node). A node SIGKILLed after the
first checkpoint makes the other exit with one line within a bounded time, and starting both
nodes again resumes from the last checkpoint; a SIGSTOPped (frozen) node is noticed after
`--ddp-timeout`. The dataset is the tiny generated one (120 clips of
3.7 s; 21 test clips, an odd count split unevenly over the two ranks).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

import run
from experiments.peers import DEFAULT_DDP_TIMEOUT, _describe, is_peer_error
from experiments.resolve import resolve
from experiments.trainer import build_strategy
from tests.support.helpers import TINY_MEL_ARGS, read_metrics, run_options, tiny_data_args
from tests.support.paths import REPO_ROOT
from tests.support.pg_server import free_port

CLIPS = 120
EVAL_BATCH = 4
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE",
                    "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


_options = run_options


def test_ddp_timeout_reaches_the_strategy():
    assert build_strategy(resolve(_options("--accelerator", "cpu", "--num-nodes", "2")))._timeout == timedelta(
        seconds=DEFAULT_DDP_TIMEOUT)
    strategy = build_strategy(resolve(_options("--accelerator", "cpu", "--num-nodes", "2", "--ddp-timeout", "45")))
    assert strategy._timeout == timedelta(seconds=45)
    with pytest.raises(SystemExit):
        run.build_parser().parse_args(["--ddp-timeout", "0"])
    # the gloo messages a lost peer produces, shortened to their first sentence
    assert _describe(RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by "
                                  "peer [127.0.0.1]:3245. This is typically caused by a remote worker crashing.")
                     ) == "Connection closed by peer [127.0.0.1]:3245"
    assert _describe(RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 20000ms for recv "
                                  "operation to complete")) == "Timed out waiting 20000ms for recv operation to complete"


def test_each_way_gloo_reports_a_lost_or_frozen_peer_is_recognised():
    """The frozen-node test met the third message on CI: a pair timing out inside DDP's backward all-reduce."""
    for message in ("[pair.cc:561] Connection closed by peer [127.0.0.1]:3245",
                    "[unbound_buffer.cc:81] Timed out waiting 20000ms for recv operation to complete",
                    "Application timeout caused pair closure"):
        assert is_peer_error(RuntimeError(message)), message
    assert not is_peer_error(RuntimeError("CUDA out of memory")) and not is_peer_error(ValueError("Timed out waiting"))


# ---- launching nodes -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(cache_dir):
    """The session's tiny dataset, prepared before the nodes start, so both only open it and reach the
    rendezvous together."""
    from sweeps.study import dataset_clip_samples

    dataset_clip_samples(_options(*tiny_data_args(cache_dir, CLIPS), *TINY_MEL_ARGS["mel_cnn"]))
    return cache_dir


def _train_args(cache: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--model", "mel_cnn", *tiny_data_args(cache, CLIPS), *TINY_MEL_ARGS["mel_cnn"], "--accelerator", "cpu",
            "--num-nodes", "2", "--devices", "1", "--max-epochs", "2", "--eval-batch-size", str(EVAL_BATCH),
            "--logger", "csv", "--run-dir", str(run_dir), "--ddp-timeout", "60", *extra]


class Node:
    """One "node": a process group of its own (killing it kills the node's every process), output collected."""

    def __init__(self, command: list[str], env: dict):
        self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(line.rstrip("\n") for line in self.proc.stdout),
                                        daemon=True)
        self._reader.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.killpg(os.getpgid(self.proc.pid), sig)

    def wait(self, timeout: float) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            raise AssertionError(f"node still running after {timeout} s:\n" + "\n".join(self.lines[-60:])) from None
        self._reader.join(timeout=30)
        return "\n".join(self.lines)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    return dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled")


def _per_node(args: list[str]) -> list[Node]:
    """`MASTER_ADDR=127.0.0.1 MASTER_PORT=P NODE_RANK=R python run.py ...` on each node."""
    port = str(free_port())
    return [Node([sys.executable, str(REPO_ROOT / "run.py"), *args],
                 dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank))) for rank in (0, 1)]


def _torchrun(args: list[str]) -> list[Node]:
    """`torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --master-addr 127.0.0.1 --master-port P run.py ...`."""
    port = str(free_port())
    return [Node([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                  "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", port,
                  str(REPO_ROOT / "run.py"), *args], _env()) for rank in (0, 1)]


def _finish(nodes: list[Node], timeout: float = 600) -> list[str]:
    outputs = [node.wait(timeout) for node in nodes]
    assert [n.proc.returncode for n in nodes] == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
    assert "distributed: training in 2 processes on 2 node(s) (gloo" in outputs[0]  # one world of two nodes
    return outputs


def _assert_single_process_evaluation_matches(run_dir: Path, eval_dir: Path) -> None:
    trained = read_metrics(run_dir)
    assert run.main(["--evaluate", str(run_dir), "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
                     "--no-progress", "--run-dir", str(eval_dir)]) == 0
    single = read_metrics(eval_dir)
    assert single["test"]["n_clips"] == trained["test"]["n_clips"] == 21  # every test clip once, uneven ranks
    assert single["best_checkpoint"] == trained["best_checkpoint"]
    for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
        assert single[key] == pytest.approx(trained[key], abs=1e-6), key
    for key in ("per_tag_roc_auc", "per_tag_pr_auc"):
        a, b = trained["test"][key], single["test"][key]
        assert [x is None or math.isnan(x) for x in a] == [x is None or math.isnan(x) for x in b], key
        assert [x for x in a if x is not None and not math.isnan(x)] == pytest.approx(
            [x for x in b if x is not None and not math.isnan(x)], abs=1e-6), key
    assert single["thresholds"] == trained["thresholds"]


@pytest.mark.slow
def test_per_node_launch_survives_a_killed_node_and_resumes(cache, tmp_path):
    run_dir = tmp_path / "run"
    args = _train_args(cache, run_dir, "--max-epochs", "3")
    nodes = _per_node(args)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 480
    while not last.is_file():  # after the first epoch
        assert time.time() < deadline and all(n.proc.poll() is None for n in nodes), \
            "\n\n".join("\n".join(n.lines[-40:]) for n in nodes)
        time.sleep(0.05)
    time.sleep(0.3)
    nodes[0].kill()  # the main node (it also hosts the rendezvous store) dies
    killed_at = time.monotonic()
    out = nodes[1].wait(timeout=120)
    waited = time.monotonic() - killed_at
    nodes[0].wait(timeout=30)
    assert nodes[1].proc.returncode == 2, out[-4000:]
    assert waited < 90  # bounded: the closed connection is noticed at the next collective (~10 s measured)
    error_lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "lost contact with another training process" in error_lines[0], out[-4000:]
    assert f"resume from the last checkpoint ({last})" in error_lines[0]
    assert "Traceback" not in out
    assert not (run_dir / "metrics.json").exists()

    outputs = _finish(_per_node(args))  # both nodes again, the same command
    assert f"resuming {last.parent.parent} from checkpoints/last.ckpt" in outputs[0]
    assert read_metrics(run_dir)["epochs"] == 3
    _assert_single_process_evaluation_matches(run_dir, tmp_path / "evaluation")


@pytest.mark.slow
def test_a_frozen_node_is_noticed_after_the_ddp_timeout(cache, tmp_path):
    """SIGSTOP: a node that stops answering without closing its connections (frozen, powered off, cut
    off); only the collective's timeout can tell. With --ddp-timeout the other node stops after it."""
    timeout = 10
    run_dir = tmp_path / "run"
    nodes = _per_node(_train_args(cache, run_dir, "--max-epochs", "3", "--ddp-timeout", str(timeout)))
    deadline = time.time() + 480
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # both nodes are training
        assert time.time() < deadline and all(n.proc.poll() is None for n in nodes), \
            "\n\n".join("\n".join(n.lines[-40:]) for n in nodes)
        time.sleep(0.05)
    nodes[1].kill(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        out = nodes[0].wait(timeout=180)
        waited = time.monotonic() - frozen_at
    finally:
        nodes[1].kill()
        nodes[1].wait(timeout=30)
    assert nodes[0].proc.returncode == 2, out[-4000:]
    assert timeout - 1 <= waited < 120  # the timeout, not a closed connection, ended it (32 s measured at --ddp-timeout 20)
    error_lines = [line for line in out.splitlines() if line.startswith("error: ")]
    # gloo says "Timed out waiting ..." or "Application timeout caused pair closure", depending on where it waits
    assert len(error_lines) == 1 and re.search(r"timed out|timeout caused", error_lines[0], re.I), out[-4000:]
    assert f"did not answer for --ddp-timeout {timeout} s" in error_lines[0] and "Traceback" not in out


@pytest.mark.slow
def test_torchrun_launch_trains_and_evaluates_as_one_process(cache, tmp_path):
    run_dir = tmp_path / "run"
    outputs = _finish(_torchrun(_train_args(cache, run_dir)))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_nodes"] == 2 and config["devices"] == 1
    last = run_dir / "checkpoints" / "last.ckpt"
    assert read_metrics(run_dir)["epochs"] == 2 and f"checkpoint path at {last}" not in outputs[0]  # a fresh run
    _assert_single_process_evaluation_matches(run_dir, tmp_path / "evaluation")
