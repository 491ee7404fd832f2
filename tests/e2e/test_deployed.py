"""`prefect deployment run cgaug/generate` on a real server (SQLite) with process workers for both pools.

One stack for the session (`pool`, tests/e2e/conftest.py): a CPU worker for
the parent and two GPU-pool workers running on the CPU with the tiny
generator, so that two workers really compete for the same output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cgaug import stack
from cgaug.config import CGAugConfig
from cgaug.storage.claims import CLAIMS_DIR
from cgaug.storage.fs import open_root
from cgaug.storage.reports import journal
from cgaug.storage.shards import verify
from tests.e2e.conftest import (
    TINY,
    api,
    artifacts,
    child_runs,
    parameters,
    run_generate,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _planned_ids(out: Path) -> list[str]:
    return pq.read_table(out / "plan.parquet", columns=["sample_id"])["sample_id"].to_pylist()


def _assert_every_planned_sample_once(out: Path) -> None:
    assert verify(open_root(str(out))) == []
    index = pq.read_table(out / "index.parquet", columns=["sample_id"])["sample_id"].to_pylist()
    assert sorted(index) == sorted(_planned_ids(out)) and len(set(index)) == len(index)
    writes = journal(open_root(str(out)))
    assert {shard: len(entries) for shard, entries in writes.items()} == {s: 1 for s in writes}


def test_deploy_applies_every_deployment_with_its_pool_and_an_inactive_schedule(pool):
    with api(pool.api_url) as client:
        found = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
        pools = {p.name: p.type for p in client.read_work_pools()}
    assert set(found) == {"cgaug/generate", "cgaug-shard/gpu", "cgaug-eval/gpu", "cgaug-train/gpu"}
    assert pools == {"cpu": "process", "gpu": "process"}
    assert found["cgaug/generate"].work_pool_name == "cpu"
    assert {d.work_pool_name for name, d in found.items() if name != "cgaug/generate"} == {"gpu"}
    [schedule] = found["cgaug/generate"].schedules
    assert not schedule.active and schedule.schedule.cron == "0 3 * * *"
    assert found["cgaug/generate"].parameters["orchestration"]["in_process"] is False
    assert found["cgaug/generate"].global_concurrency_limit.limit == 1


def test_generate_deployment_fans_out_to_the_gpu_pool(pool, e2e_source, tmp_path):
    out = tmp_path / "out"
    run = run_generate(pool.api_url, parameters(e2e_source, out, quality_floor=None))
    assert run.state.is_completed(), run.state
    _assert_every_planned_sample_once(out)
    assert pq.read_table(out / "index.parquet").num_rows == 4

    children = child_runs(pool.api_url, run.id)
    assert len(children) == 2 and all(c.state.is_completed() for c in children)
    with api(pool.api_url) as client:
        assert client.read_deployment(run.deployment_id).work_pool_name == "cpu"
        child_deployments = {client.read_deployment(c.deployment_id).name for c in children}
        assert {client.read_flow(c.flow_id).name for c in children} == {"cgaug-shard"}
    assert child_deployments == {"gpu"} and {c.work_pool_name for c in children} == {"gpu"}

    quality = artifacts(pool.api_url, "cgaug-shard-quality", [c.id for c in children])
    assert len(quality) == 2 and all(a.type == "table" for a in quality)
    tables = [json.loads(a.data) if isinstance(a.data, str) else a.data for a in quality]
    assert sorted(t[0]["value"].split(":")[0] for t in tables) == ["shard-00000", "shard-00001"]
    previews = artifacts(pool.api_url, "cgaug-shard-preview", [c.id for c in children])
    assert len(previews) == 2 and all("data:image/jpeg;base64," in a.data for a in previews)
    summary = artifacts(pool.api_url, "cgaug-run-summary", [run.id])
    assert len(summary) == 1 and str(out) in summary[0].data and "written this run:** 2 shards" in summary[0].data

    # Incremental regeneration: the same parameters again do nothing and say so.
    again = run_generate(pool.api_url, parameters(e2e_source, out, quality_floor=None))
    assert again.state.is_completed() and child_runs(pool.api_url, again.id) == []
    assert "nothing to do" in artifacts(pool.api_url, "cgaug-run-summary", [again.id])[0].data


def test_new_source_images_only_add_their_shards(pool, e2e_source, tmp_path):
    from cgaug.fixtures import write_fixtures

    source, out = tmp_path / "cityscapes", tmp_path / "out"
    shutil.copytree(e2e_source, source)
    first = run_generate(pool.api_url, parameters(source, out, quality_floor=None, shards_per_child=2))
    assert first.state.is_completed()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}

    extra = tmp_path / "extra"
    new_id = write_fixtures(extra, images=3, seed=7, height=128, width=256)[-1]  # one more source image
    for kind in ("leftImg8bit", "gtFine"):
        shutil.copytree(extra / kind / "train" / new_id.split("_")[0], source / kind / "train" / new_id.split("_")[0])

    second = run_generate(pool.api_url, parameters(source, out, quality_floor=None, shards_per_child=2))
    assert second.state.is_completed()
    assert len(child_runs(pool.api_url, second.id)) == 1
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}
    assert {k: after[k] for k in before} == before  # complete shards never rewritten
    assert sorted(set(after) - set(before)) == ["shard-00002.parquet"]
    _assert_every_planned_sample_once(out)
    text = artifacts(pool.api_url, "cgaug-run-summary", [second.id])[0].data
    assert "2 new samples planned" in text


def test_two_gpu_workers_never_write_the_same_shard_twice(pool, e2e_source, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cgaug.tasks.generation.run import plan_run

    out = tmp_path / "out"
    config = CGAugConfig.model_validate(TINY | {"run": {"variants": 2, "shard_size": 1}})
    plan, _ = plan_run(str(e2e_source), str(out), str(e2e_source / "bank.parquet"), config)
    shards = sorted({e.spec.shard for e in plan})
    params = {"source": str(e2e_source), "out": str(out), "bank": str(e2e_source / "bank.parquet"),
              "config": config.model_dump(mode="json"), "shard_ids": shards, "claim_ttl_s": 30.0}
    with temporary_settings({PREFECT_API_URL: pool.api_url}):  # the same shards, twice, at once
        ids = [run_deployment("cgaug-shard/gpu", parameters=params, timeout=0, as_subflow=False).id
               for _ in range(2)]
    with api(pool.api_url) as client:
        def finished():
            found = [client.read_flow_run(i) for i in ids]
            return found if all(r.state.is_final() for r in found) else None

        runs = wait_until(finished, 600, "both child runs to finish")
    assert all(r.state.is_completed() for r in runs)
    assert len({r.infrastructure_pid for r in runs}) == 2  # two workers' processes
    (a, b) = sorted(runs, key=lambda r: r.start_time)
    assert b.start_time < a.end_time, "the two runs did not overlap: the test proved nothing"
    writes = journal(open_root(str(out)))
    assert sorted(writes) == shards and all(len(entries) == 1 for entries in writes.values())
    assert {e["producer"]["flow_run"] for entries in writes.values() for e in entries} <= {str(i) for i in ids}


def _claim_owner(out: Path) -> dict | None:
    for path in (out / CLAIMS_DIR).glob("*.json"):
        try:
            return json.loads(path.read_text())["owner"]
        except (OSError, ValueError):
            continue
    return None


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_sigkill_of_a_gpu_worker_mid_shard_then_rerun_completes_exactly_once(pool, e2e_source, tmp_path):
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    out = tmp_path / "out"
    params = parameters(e2e_source, out, TINY | {"run": {"variants": 2, "shard_size": 1}}, quality_floor=None,
                        claim_ttl_s=3.0)
    with temporary_settings({PREFECT_API_URL: pool.api_url}):
        parent = run_deployment("cgaug/generate", parameters=params, timeout=0, as_subflow=False)
    owner = wait_until(lambda: _claim_owner(out), 300, "a shard in production (a claim)", every_s=0.05)
    flow_pid = owner["pid"]
    worker_pid = _parent_pid(flow_pid)
    name = next(n for n, pid in pool.processes.items() if pid == worker_pid)
    assert name.startswith("worker-cpu-as-gpu")
    for pid in {os.getpgid(flow_pid), worker_pid}:  # the worker and the flow run it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in (flow_pid, worker_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    committed_at_kill = {p.name for p in (out / "shards").glob("*.parquet")} if (out / "shards").exists() else set()

    with api(pool.api_url) as client:  # the parent waits for a child that will never finish: cancel it
        client.set_flow_run_state(parent.id, Cancelling(), force=True)
        wait_until(lambda: client.read_flow_run(parent.id).state.type in (StateType.CANCELLED, StateType.CRASHED),
                   120, "the first parent to be cancelled")
    pool.processes[name] = stack.start_worker(name, stack.GPU_POOL, pool.api_url, Path(pool.state_dir), 1).pid
    pool.save()

    rerun = run_generate(pool.api_url, params)
    assert rerun.state.is_completed(), rerun.state
    _assert_every_planned_sample_once(out)
    assert len(_planned_ids(out)) == 4
    assert len(committed_at_kill) < 4  # the kill really happened before the dataset was done


def test_low_quality_shard_pauses_the_generate_schedule(pool, e2e_source, tmp_path):
    """Acceptance below the floor -> `cgaug.shard.low-quality` -> the automation pauses cgaug/generate."""
    strict = TINY | {"filters": {"mode": "tiny", "sam_iou_threshold": 0.99, "max_attempts": 1}}  # all rejected
    with api(pool.api_url) as client:
        deployment = client.read_deployment_by_name("cgaug/generate")
        assert not deployment.paused
        try:
            run = run_generate(pool.api_url, parameters(e2e_source, tmp_path / "out", strict, quality_floor=0.5,
                                                        shards_per_child=2))
            assert run.state.is_completed()
            wait_until(lambda: client.read_deployment(deployment.id).paused, 120,
                       "the automation to pause cgaug/generate")
        finally:
            client.resume_deployment(deployment.id)
    assert "low-quality shards:** 2" in artifacts(pool.api_url, "cgaug-run-summary", [run.id])[0].data
