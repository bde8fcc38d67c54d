"""Launchers: where `sigprop reproduce` trains its runs and `sigprop sweep` computes its points.

    local           in this process (the default; a sweep's process pool)
    slurm           one job per run (a job array) on a Slurm cluster, through submitit (pip install 'sigprop[cluster]')
    local-submitit  the same jobs as real subprocesses on this machine (submitit's LocalExecutor): the cluster path,
                    testable without a cluster

    sigprop reproduce fig13 --scale cpu --launcher slurm --partition gpu --time 120 --gpus 1 --mem 16

Each job trains into its run folder under the run's lock (`runs.RunLock`), exactly as a local run does, so a job
and a local process (or two submissions) never write one run at once; a run that is finished is never submitted.
submitit keeps each job's pickled call, stdout and stderr in <out>/submitit/.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sigprop.errors import SigpropError, check_choice, check_positive

LAUNCHERS = ("local", "slurm", "local-submitit")


@dataclass(frozen=True)
class Launcher:
    """Where jobs run and what each one asks for: partition, time limit (minutes), CPUs, GPUs, memory (GB)."""

    kind: str = "local"
    partition: str | None = None
    time: int = 60
    cpus: int = 1
    gpus: int = 0
    mem: float | None = None

    def __post_init__(self) -> None:
        check_choice("launcher", self.kind, LAUNCHERS)
        check_positive("--time (minutes)", self.time)
        check_positive("--cpus", self.cpus)
        if self.gpus < 0:
            raise SigpropError(f"--gpus must be >= 0, got {self.gpus}")
        if self.mem is not None:
            check_positive("--mem (GB)", self.mem)

    @property
    def submits(self) -> bool:
        """True when jobs go through submitit (every launcher but local)."""
        return self.kind != "local"

    def describe(self) -> str:
        """'slurm (partition gpu, 120 min, 4 CPUs, 1 GPU, 16 GB per job)'."""
        parts = ([f"partition {self.partition}"] if self.partition else []) + [f"{self.time} min", f"{self.cpus} CPU(s)",
                                                                                f"{self.gpus} GPU(s)"]
        parts += [f"{self.mem:g} GB"] if self.mem else []
        return f"{self.kind} ({', '.join(parts)} per job)"

    def executor(self, folder: Path, name: str):
        """A submitit executor with these resources, logging into `folder`."""
        try:
            import submitit
        except ImportError:
            raise SigpropError(f"--launcher {self.kind} needs the submitit package: pip install 'sigprop[cluster]'") from None
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm" if self.kind == "slurm" else "local")
        params = {"name": name, "timeout_min": int(self.time), "cpus_per_task": int(self.cpus), "gpus_per_node": int(self.gpus),
                  "tasks_per_node": 1, "nodes": 1}
        if self.mem:
            params["mem_gb"] = float(self.mem)
        if self.kind == "slurm" and self.partition:
            params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        return ex


def job_error(e: BaseException) -> str:
    """The job's own exception in one line ('RunInUse: run directory ... is in use by ...'): submitit's error carries
    the job's whole traceback, whose last 'module.Error: message' line is the one that says what went wrong."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|InUse|Diverged|Interrupt)\b.*?: ", ln)]
    if raised:
        return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", raised[-1], count=1)
    return lines[0] if lines else type(e).__name__


def run_jobs(launcher: Launcher, fn: Callable, args: Sequence[tuple], labels: Sequence[str], folder: Path, name: str,
             say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True), poll_s: float = 2.0) -> list:
    """Submit `fn(*a)` for each `a` in `args` as one job array, wait for every job, return their results in order.
    Progress: one line per job as it ends. A failed job is one line naming it and its log; the others still finish."""
    if not args:
        return []
    ex = launcher.executor(folder, name)
    columns = list(zip(*args))
    try:
        jobs = ex.map_array(fn, *columns)
    except Exception as e:  # noqa: BLE001 - sbatch missing, a partition refused, ...: submitit raises several types
        raise SigpropError(f"could not submit {len(args)} job(s) to {launcher.kind}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}") from None
    say(f"submitted {len(jobs)} job(s) to {launcher.describe()}: ids {', '.join(j.job_id for j in jobs[:3])}"
        + (" ..." if len(jobs) > 3 else "") + f"; logs in {folder}")
    results: list = [None] * len(jobs)
    failed: list[str] = []
    pending = set(range(len(jobs)))
    t0 = time.perf_counter()
    while pending:
        for i in sorted(pending):
            if not jobs[i].done():
                continue
            pending.discard(i)
            try:
                results[i] = jobs[i].result()
                say(f"  job {len(jobs) - len(pending)}/{len(jobs)} done: {labels[i]} ({time.perf_counter() - t0:.0f} s)")
            except Exception as e:  # noqa: BLE001 - the job's own exception, re-raised by submitit
                failed.append(f"{labels[i]} (job {jobs[i].job_id}: {job_error(e)[:300]}; log {jobs[i].paths.stderr})")
                say(f"  job {len(jobs) - len(pending)}/{len(jobs)} FAILED: {failed[-1]}")
        if pending:
            time.sleep(poll_s)
    if failed:
        raise SigpropError(f"{len(failed)} of {len(jobs)} job(s) failed: {'; '.join(failed[:3])}")
    return results
