"""What a killed-and-recovered run of a generated pipeline must satisfy, against its oracle.

The oracle is the same case run once, uninterrupted, in its own process and journal. For every trial
(a run SIGKILLed after journal commit k, then recovered by a fresh process, and resumed with force by
another when it stopped on a stage not safe to repeat):

* the kill really happened (the process died of SIGKILL), unless that run finished in fewer commits
  than k (concurrent stages share group commits, so the count varies): such a point is not counted;
* the final status, the run output and every stage's committed status and output equal the oracle's;
* ``PRAGMA integrity_check`` is ok;
* no stage whose result a resume keeps (success, skipped, handled failure) ran again after the kill;
* every stage ran in at most one process more than in the oracle (the one in flight at the kill), a
  failed one in at most every process (a resume retries an unhandled failure by design), with no
  more attempts in any one process than the oracle made, and every stage of the oracle ran.
"""

from __future__ import annotations

import re
import signal
from collections import Counter, defaultdict
from typing import Any


# new_run_id(): a child run gets a fresh random id in every process tree.
_RUN_ID = re.compile(r"\br[0-9a-f]+-[0-9a-f]{16}\b")
_UNSTABLE_KEYS = frozenset({"child_run_id", "execution_time_ms"})


def normalise(value: Any) -> Any:
    """A run output without child run ids (as keys or inside error messages) or wall-clock timings
    (a subpipeline's ``execution_time_ms``, FlowMason's output field)."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k not in _UNSTABLE_KEYS}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        return _RUN_ID.sub("<run>", value)
    return value


def _key(run_keys: dict[str, str], entry: dict[str, Any]) -> str:
    return run_keys.get(entry["run_id"], f"?{entry['run_id']}>") + entry["path"]


def check_trial(oracle: dict[str, Any], trial: dict[str, Any]) -> list[str]:
    """Every way ``trial`` differs from ``oracle``, as readable lines (empty: it matches)."""
    if "error" in trial:
        return [f"trial process failed: {trial['error'][-1500:]}"]
    problems: list[str] = []
    killed, final = trial["phases"][0], trial["phases"][-1]
    if killed["returncode"] != -signal.SIGKILL:
        problems.append(f"the run was not killed at commit {trial['kill_after']}: exit {killed['returncode']}"
                        f" {killed.get('crash') or ''}")
    for phase in trial["phases"][1:]:
        if phase["returncode"] != 0:
            problems.append(f"a recovery process exited {phase['returncode']}: {(phase.get('crash') or '')[-1500:]}")
    report, expected = final.get("report") or {}, oracle["report"]
    if report.get("status") != expected["status"]:
        problems.append(f"status {report.get('status')} ({(report.get('error') or {}).get('message')}) "
                        f"!= oracle's {expected['status']}")
    if normalise(report.get("output")) != normalise(expected["output"]):
        problems.append(f"output {report.get('output')!r} != oracle's {expected['output']!r}")
    if trial["integrity"] != "ok":
        problems.append(f"integrity_check: {trial['integrity']}")
    journal = trial["journal"] or {"statuses": {}, "run_keys": {}}
    want, got = oracle["journal"]["statuses"], journal["statuses"]
    if got != want:
        diff = {k: (got.get(k), want.get(k)) for k in sorted(want.keys() | got.keys()) if got.get(k) != want.get(k)}
        problems.append(f"stage statuses differ (trial, oracle): {diff}")
    want_out, got_out = normalise(oracle["journal"]["outputs"]), normalise(journal.get("outputs", {}))
    if got_out != want_out:
        diff = {k: (got_out.get(k), want_out.get(k)) for k in sorted(want_out.keys() | got_out.keys())
                if got_out.get(k) != want_out.get(k)}
        problems.append(f"stage outputs differ (trial, oracle): {diff}")

    kept = {tuple(x) for x in trial["at_kill"]["kept"]}
    after = trial["ledger"][trial["ledger_at_kill"]:]
    again = sorted({f"{e['run_id']}:{e['path']}" for e in after if (e["run_id"], e["path"]) in kept})
    if again:
        problems.append(f"stages ran again after their result was committed: {again}")

    oracle_keys = oracle["journal"]["run_keys"]
    run_keys = journal["run_keys"]
    oracle_attempts = Counter(_key(oracle_keys, e) for e in oracle["ledger"])
    processes: dict[str, Counter[int]] = defaultdict(Counter)
    for entry in trial["ledger"]:
        processes[_key(run_keys, entry)][entry["pid"]] += 1
    for key, per_pid in sorted(processes.items()):
        if key not in oracle_attempts:
            problems.append(f"{key} ran, but not in the oracle")
            continue
        # A failure the run did not handle is retried by every resume (one per process after the
        # kill); any other stage runs in one more process at most: the one in flight at the kill.
        allowed = len(trial["phases"]) if want.get(key) == "failed" else 2
        if len(per_pid) > allowed:
            problems.append(f"{key} ran in {len(per_pid)} processes (allowed: {allowed})")
        if max(per_pid.values()) > oracle_attempts[key]:
            problems.append(f"{key} made {max(per_pid.values())} attempts in one process, the oracle "
                            f"{oracle_attempts[key]}")
    missing = sorted(set(oracle_attempts) - set(processes))
    if missing:
        problems.append(f"stages of the oracle never ran: {missing}")
    return problems


def unreached(trial: dict[str, Any]) -> bool:
    """The run finished in fewer commits than the kill point (stages finishing together share a
    commit, so the count varies a little between runs): there was no commit k to die after."""
    if "error" in trial:
        return False
    killed = trial["phases"][0]
    done = (killed.get("report") or {}).get("transactions")
    return killed["returncode"] == 0 and done is not None and done < trial["kill_after"]


def check_case(answer: dict[str, Any]) -> dict[int, list[str]]:
    """Problems by kill point (0: the oracle itself) of one case; unreached kill points are skipped."""
    oracle = answer["oracle"]
    if oracle["returncode"] != 0 or not oracle.get("report"):
        return {0: [f"the oracle run exited {oracle['returncode']}: {(oracle.get('crash') or '')[-2000:]}"]}
    out: dict[int, list[str]] = {}
    for trial in answer["trials"]:
        if unreached(trial):
            continue
        problems = check_trial(oracle, trial)
        if problems:
            out[trial["kill_after"]] = problems
    return out
