"""Helpers for Remedy runbooks in Python (written by `remedy new`): typed
config lookups, findings, the action tally, logging and error text."""

from componentize_py_types import Err
from wit_world.imports import log, types


def invalid(message: str) -> Err:
    """An `invalid` error to raise from detect/mitigate."""
    return Err(types.Error_Invalid(message))


def error_text(e) -> str:
    """`kind: message` for a host error (the value of a raised `Err`)."""
    kind = type(e).__name__.removeprefix("Error_").lower()
    return f"{kind}: {getattr(e, 'value', e)}"


class Config:
    """The run's config (its `[config]` keys, as strings) with defaults."""

    def __init__(self, ctx):
        self.pairs = dict(ctx.config)

    def get(self, key: str):
        v = self.pairs.get(key, "").strip()
        return v or None

    def str(self, key: str, default: str) -> str:
        return self.get(key) or default

    def _parsed(self, key, default, kind):
        v = self.get(key)
        if v is None:
            return default
        try:
            return kind(v)
        except ValueError:
            raise invalid(f"config key `{key}`: cannot parse `{v}`")

    def float(self, key: str, default: float) -> float:
        return self._parsed(key, default, float)

    def int(self, key: str, default: int) -> int:
        return self._parsed(key, default, int)

    def list(self, key: str, default: list) -> list:
        v = self.get(key)
        if v is None:
            return list(default)
        return [x.strip() for x in v.split(",") if x.strip()]


def finding(severity, summary: str, **evidence) -> types.Finding:
    return types.Finding(
        severity=severity,
        summary=summary,
        evidence=[(k, str(v)) for k, v in evidence.items()],
    )


def percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def info(message: str):
    log.log(log.Level.INFO, message)


def warn(message: str):
    log.log(log.Level.WARN, message)


def alert_label(ctx, name: str):
    """A label of the alert that triggered the run, if any."""
    t = ctx.trigger
    if isinstance(t, types.Trigger_Alert):
        return dict(t.value.labels).get(name)
    return None


class Actions:
    """Tally of the gated actions a mitigation attempted: what ran, what
    was simulated (dry-run), and what was not done (to hand over)."""

    def __init__(self):
        self.executed = 0
        self.simulated = 0
        self.not_done = []

    @property
    def attempted(self) -> int:
        return self.executed + self.simulated

    def record(self, target: str, call):
        """Calls `call()` (a mutating host call) and counts its answer."""
        try:
            applied = call()
        except Err as e:
            self.not_done.append(f"{target}: {error_text(e.value)}")
            return None
        if applied == types.Applied.EXECUTED:
            self.executed += 1
        else:
            self.simulated += 1
        return applied
