"""The lights test of interfaces.md §5: every bay light walked through blue, green, off and back, each step
checked against the fixture's ack.

`advance` and the result records are the pure core (one bay in one step: waiting for the gateway's command,
then for the fixture's ack, or for the step's time to run out). `LightsTester` is the shell: it holds test
overrides in memory only (a crash must not leave one behind), wakes the cycle that publishes them, and
puts every bay back to what it should show.

Kept in one file past 400 lines: the pure step and the shell that runs it are read side by side
(every state of `advance` is one the shell must handle).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from drivers.contract.clock import wire_ts
from drivers.contract.words import COLORS
from signage.rules import Override

log = logging.getLogger("laadplein.lights_test")

STEPS = (*COLORS, "back")
TEST_WHO, TEST_WHY = "lights-test", "light test"
POLL_S = 0.05  # how often the shell looks at the commands and acks
DEFAULT_HOLD_S = 1.0  # each colour stays on at least this long, so a person on the square sees it
MAX_HOLD_S = 30.0
BACKSTOP_S = 60.0  # a test override ends by itself this long after it was set, should the test hang

NOT_DECIDED = "not tested: the gateway has not decided this bay's light yet (no status from its charger since start)"


class LightsTestBusy(Exception):
    """A lights test is already running; `progress` says how far it is."""

    def __init__(self, progress: dict) -> None:
        super().__init__(f"a lights test is already running (started {progress['started']}, UTC)")
        self.progress = progress


class UnknownBay(LookupError):
    """A bay asked for is not in the config."""


class LightsState(Protocol):
    """What the tester needs of `controller.shell.state.SquareState`."""

    cfg: Any
    overrides: dict[str, Override]
    commands: dict[str, dict]
    acks: dict[str, tuple[int, str, datetime]]
    wake: asyncio.Event
    broker_online: bool

    def clock(self) -> datetime: ...

    def note(self, kind: str, message: str, **where: Any) -> None: ...

    def bay_known(self, bay_id: str, now: datetime) -> bool: ...


# ---- the pure core -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """How one bay did in one step; `ack_s` in s from the step's start to the fixture's ack.

    `color` is the colour asked: the step's own, or for `back` the bay's decided colour (None when the
    gateway never published it).
    """

    step: str
    ok: bool
    color: str | None
    seq: int | None = None
    ack_s: float | None = None
    problem: str | None = None

    def as_json(self) -> dict:
        return {"step": self.step, "color": self.color, "ok": self.ok, "seq": self.seq, "ack_s": self.ack_s,
                "problem": self.problem}


@dataclass(frozen=True)
class Waiting:
    """One bay in one step, not judged yet: since when (wall clock), and once the gateway published the
    step's command, its (seq, colour)."""

    step: str
    started_at: datetime
    want: tuple[int, str] | None = None


def is_step_command(step: str, command: Mapping | None, *, before_seq: int | None, restored_color: str | None) -> bool:
    """Whether `command`, the bay's last published light command, is the one `step` asks for.

    A colour step wants the test override's command. `back` wants the cycle's own decision: a command
    that is not an override, or newer than the one at the step's start, or the same as a technician's
    restored override would publish (then no new command comes).
    """
    if command is None:
        return False
    if step != "back":
        return command["color"] == step and command["reason"] == "override"
    return (
        command["reason"] != "override"
        or before_seq is None
        or command["seq"] > before_seq
        or command["color"] == restored_color
    )


def _seq(command: Mapping | None) -> int:
    return command["seq"] if command is not None else -1


def _published(ack_seq: int, want_seq: int, command: Mapping | None) -> bool:
    """Whether an ack's seq is the step's command or a later one the gateway has published since."""
    return want_seq <= ack_seq <= max(want_seq, _seq(command))


def advance(
    w: Waiting, command: Mapping | None, ack: tuple[int, str, datetime] | None, *, elapsed_s: float, timeout_s: float,
    before_seq: int | None = None, restored_color: str | None = None, broker_online: bool = True,
) -> Waiting | StepResult:
    """One look at a bay during a step: still `Waiting`, or its `StepResult` (elapsed_s and timeout_s in s).

    The fixture passes when its ack carries the command's seq (or a later one the gateway published)
    and the command's colour. An ack for a seq the gateway never published is not the fixture's word
    (anyone on the broker can write one): it counts for nothing.
    """
    if w.want is None and is_step_command(w.step, command, before_seq=before_seq, restored_color=restored_color):
        w = replace(w, want=(command["seq"], command["color"]))
    if w.want is not None and ack is not None and _published(ack[0], w.want[0], command):
        seq, color = w.want
        if ack[1] == color:
            ack_s = min(max(0.0, (ack[2] - w.started_at).total_seconds()), max(elapsed_s, 0.0))
            return StepResult(w.step, True, color, seq, round(ack_s, 3))
        return StepResult(w.step, False, color, seq, problem=f"acked {ack[1]} while {color} was asked (seq {ack[0]})")
    if elapsed_s < timeout_s:
        return w
    back = " (back)" if w.step == "back" else ""
    if w.want is None:
        what = "the bay's own light again" if w.step == "back" else w.step
        problem = f"the gateway did not publish {what} within {timeout_s:g} s"
        color = None if w.step == "back" else w.step
        seq = None
    else:
        seq, color = w.want
        last = "the fixture has not acked anything since the gateway started" if ack is None else (
            f"last ack: seq {ack[0]}, {ack[1]}"
            + (", a seq the gateway never published" if ack[0] > max(seq, _seq(command)) else ""))
        problem = f"no ack for {color}{back} within {timeout_s:g} s ({last})"
    if not broker_online:
        problem += "; the MQTT broker is not connected"
    return StepResult(w.step, False, color, seq, problem=problem)


@dataclass(frozen=True)
class FixtureResult:
    """One bay's whole test: its steps in order, or why it was not tested."""

    bay: str
    steps: tuple[StepResult, ...] = ()
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and len(self.steps) == len(STEPS) and all(s.ok for s in self.steps)

    @property
    def problem(self) -> str | None:
        if self.skipped is not None:
            return self.skipped
        failed = [s for s in self.steps if not s.ok]
        if not failed:
            return None if len(self.steps) == len(STEPS) else "the test stopped before its last step"
        # The first failure says what is wrong; each step keeps its own problem in `steps`.
        more = [s.step for s in failed[1:]]
        if not more:
            return failed[0].problem
        return f"{failed[0].problem}; {', '.join(more[:-1]) + ' and ' if len(more) > 1 else ''}{more[-1]} failed too"

    def as_json(self) -> dict:
        return {"bay": self.bay, "ok": self.ok, "steps": [s.as_json() for s in self.steps], "problem": self.problem}


def result_json(started: datetime, took_s: float, fixtures: Sequence[FixtureResult], problem: str | None = None) -> dict:
    """The answer of `POST /api/lights/test`."""
    return {
        "ok": problem is None and all(f.ok for f in fixtures),
        "started": wire_ts(started),
        "took_s": took_s,
        "problem": problem,
        "fixtures": [f.as_json() for f in fixtures],
    }


def progress_json(
    started: datetime, bays: Sequence[str], step_index: int,
    results: Mapping[str, Sequence[StepResult]], skipped: Mapping[str, str],
) -> dict:
    """`GET /api/lights/test` while a test runs: the step under way, how many bays are through it, and
    per bay how many steps are done."""
    tested = [b for b in bays if b not in skipped]
    on_step = [results[b][step_index] for b in tested if len(results.get(b, ())) > step_index]
    return {
        "running": True,
        "started": wire_ts(started),
        "step": step_index + 1,
        "steps": len(STEPS),
        "step_name": STEPS[step_index],
        "bays": len(tested),
        "acked": sum(1 for r in on_step if r.ok),
        "failed": sum(1 for r in on_step if not r.ok),
        "done": sum(len(results.get(b, ())) for b in tested),
        "total": len(tested) * len(STEPS),
        "fixtures": [
            {"bay": b, "steps_done": len(results.get(b, ())), "ok": all(r.ok for r in results.get(b, ())),
             "skipped": skipped.get(b)}
            for b in bays
        ],
    }


def parse_request(body: Mapping, bay_ids: Sequence[str]) -> tuple[list[str], float, str]:
    """(bays, hold_s, who) from a `POST /api/lights/test` body; every bay when none are named.

    Raises ValueError for a wrong shape, UnknownBay for a bay not in the config.
    """
    bays = body.get("bays")
    if bays is None:
        chosen = list(bay_ids)
    else:
        if not isinstance(bays, list) or not bays or not all(isinstance(b, str) for b in bays):
            raise ValueError("bays must be a non-empty list of bay ids, e.g. [\"B01\", \"B02\"]")
        unknown = [b for b in bays if b not in bay_ids]
        if unknown:
            raise UnknownBay(f"no bay {', '.join(repr(b) for b in unknown)} in the config")
        wanted = set(bays)
        chosen = [b for b in bay_ids if b in wanted]  # config order, each once
    hold_s = body.get("hold_s", DEFAULT_HOLD_S)
    if not isinstance(hold_s, (int, float)) or isinstance(hold_s, bool) or not 0 <= hold_s <= MAX_HOLD_S:
        raise ValueError(f"hold_s must be a number of seconds from 0 to {MAX_HOLD_S:g}, not {hold_s!r}")
    who = body.get("who") or ""
    if not isinstance(who, str):
        raise ValueError("who must be a string")
    return chosen, float(hold_s), who[:80]


# ---- the shell -----------------------------------------------------------------------------


@dataclass
class _Run:
    started: datetime
    bays: list[str]
    step_index: int = 0
    results: dict[str, list[StepResult]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def progress(self) -> dict:
        return progress_json(self.started, self.bays, self.step_index, self.results, self.skipped)


class LightsTester:
    """Runs one lights test at a time against the live state; keeps the last result for `progress()`."""

    def __init__(
        self, state: LightsState, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self._sleep = sleep
        self._mono = monotonic
        self._run: _Run | None = None
        self.last: dict | None = None

    @property
    def running(self) -> bool:
        return self._run is not None

    def progress(self) -> dict | None:
        """The running test's progress, else the last result (with `running` false), else None."""
        if self._run is not None:
            return self._run.progress()
        return None if self.last is None else {"running": False, **self.last}

    async def run(self, bays: Sequence[str], *, hold_s: float = DEFAULT_HOLD_S, who: str = "") -> dict:
        """Test the fixtures of `bays` (ids of the config) and answer as `result_json`; LightsTestBusy while one runs."""
        if self._run is not None:
            raise LightsTestBusy(self._run.progress())
        run = self._run = _Run(self.state.clock(), list(bays))
        try:
            result = await self._walk(run, hold_s, who)
        finally:
            self._run = None
        self.last = result
        return result

    async def _walk(self, run: _Run, hold_s: float, who: str) -> dict:
        st = self.state
        t0 = self._mono()
        timeout_s = float(st.cfg.signage.ack_timeout_s)
        log.info("lights test started by %s on %d bay(s): %s", who or "unknown", len(run.bays), ", ".join(run.bays))
        st.note("lights_test", f"lights test started by {who or 'unknown'} on {len(run.bays)} bay(s)",
                data={"bays": run.bays, "who": who})
        problem = None
        if not st.broker_online:
            # Nothing would reach a fixture: say so at once instead of timing out on every bay.
            problem = "the MQTT broker is not connected: no light can be reached"
            run.skipped = {bay: f"not tested: {problem}" for bay in run.bays}
        else:
            now = st.clock()
            run.skipped = {bay: NOT_DECIDED for bay in run.bays if not st.bay_known(bay, now)}
            testing = [bay for bay in run.bays if bay not in run.skipped]
            run.results = {bay: [] for bay in testing}
            if testing:
                await self._steps(run, testing, timeout_s, hold_s)
        took_s = round(self._mono() - t0, 2)
        fixtures = [FixtureResult(bay, tuple(run.results.get(bay, ())), run.skipped.get(bay)) for bay in run.bays]
        result = result_json(run.started, took_s, fixtures, problem)
        self._report(fixtures, result)
        return result

    async def _steps(self, run: _Run, testing: list[str], timeout_s: float, hold_s: float) -> None:
        st = self.state
        kept = {bay: st.overrides.get(bay) for bay in testing}  # a technician's overrides, put back afterwards
        ours: dict[str, Override] = {}
        backstop = timedelta(seconds=max(BACKSTOP_S, 2 * (timeout_s + hold_s)))
        try:
            for index, step in enumerate(STEPS):
                run.step_index = index
                now = st.clock()
                before = {bay: (st.commands.get(bay) or {}).get("seq") for bay in testing}
                restored: dict[str, str | None] = {}
                if step == "back":
                    restored = self._put_back(testing, kept, ours, now)
                else:
                    for bay in testing:
                        current = st.overrides.get(bay)
                        if bay in ours and current is not ours[bay]:
                            kept[bay] = current  # a technician set or ended an override meanwhile: theirs counts
                        ours[bay] = Override(step, now + backstop, who=TEST_WHO, why=TEST_WHY, stored=False)
                        st.overrides[bay] = ours[bay]
                st.wake.set()
                await self._step(run, step, testing, now, before, restored, timeout_s,
                                 hold_s=0.0 if step == "back" else hold_s)
        finally:
            # Also when cancelled (the daemon stops): no await here, so this cannot be cut short.
            self._put_back(testing, kept, ours, st.clock())

    async def _step(
        self, run: _Run, step: str, testing: list[str], started_at: datetime, before: Mapping[str, int | None],
        restored: Mapping[str, str | None], timeout_s: float, *, hold_s: float,
    ) -> None:
        """Wait until every bay passed or failed the step, and at least `hold_s` (s) in all."""
        st = self.state
        t0 = self._mono()
        waiting = {bay: Waiting(step, started_at) for bay in testing}
        while waiting:
            await self._sleep(POLL_S)
            elapsed_s = self._mono() - t0
            for bay in sorted(waiting):
                out = advance(
                    waiting[bay], st.commands.get(bay), st.acks.get(bay), elapsed_s=elapsed_s, timeout_s=timeout_s,
                    before_seq=before.get(bay), restored_color=restored.get(bay), broker_online=st.broker_online,
                )
                if isinstance(out, StepResult):
                    run.results[bay].append(out)
                    del waiting[bay]
                else:
                    waiting[bay] = out
        while self._mono() - t0 < hold_s:
            await self._sleep(POLL_S)

    def _put_back(self, testing: list[str], kept: dict[str, Override | None], ours: dict[str, Override],
                  now: datetime) -> dict[str, str | None]:
        """End the test overrides (a technician's comes back); the colour of any override that now holds each bay."""
        st = self.state
        held: dict[str, str | None] = {}
        for bay in testing:
            mine = ours.pop(bay, None)
            if mine is not None and st.overrides.get(bay) is mine:
                if kept.get(bay) is None:
                    del st.overrides[bay]
                else:
                    st.overrides[bay] = kept[bay]
            o = st.overrides.get(bay)
            held[bay] = o.color if o is not None and o.until > now else None
        st.wake.set()
        return held

    def _report(self, fixtures: Sequence[FixtureResult], result: dict) -> None:
        for f in fixtures:
            if f.ok:
                acks = ", ".join(f"{s.color} {s.ack_s:.2f} s" for s in f.steps)
                log.info("lights test: bay %s passed (acks: %s)", f.bay, acks)
            else:
                log.warning("lights test: bay %s FAILED: %s", f.bay, f.problem)
        failed = [f for f in fixtures if not f.ok]
        if not failed:
            message = f"lights test: all {len(fixtures)} fixture(s) passed in {result['took_s']:g} s"
        else:
            message = (f"lights test: {len(failed)} of {len(fixtures)} fixture(s) failed: "
                       + "; ".join(f"{f.bay} ({f.problem})" for f in failed))
        self.state.note("lights_test", message,
                        data={"ok": result["ok"], "failed": [f.bay for f in failed], "took_s": result["took_s"]})
