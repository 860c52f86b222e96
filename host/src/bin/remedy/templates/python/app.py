"""{{name}}: a Remedy runbook.

Build: componentize-py -d wit -w runbook componentize app -o {{name}}.wasm
Test:  remedy test {{name}}.wasm

Config keys (under [plugins.{{name}}] in remedy.toml, or [config] in a fixture):
{{#metrics}}- error_ratio_query: PromQL giving the ratio to watch.
- max_error_ratio (0.05): at or above it, the system is unhealthy.
{{/metrics}}{{#database}}- max_usage_ratio (0.9): connection use at or above it is critical.
- long_query_ms (60000): a session busy longer than this is a leak suspect.
- max_terminations (5): most sessions terminated in one run.
{{/database}}"""

import wit_world
from wit_world.imports.types import Detection, Outcome, PluginInfo, Severity
{{#metrics}}from wit_world.imports import metrics
{{/metrics}}{{#database}}from wit_world.imports import database
{{/database}}
import remedy_sdk as sdk

{{#metrics}}ERROR_RATIO = 'sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'

{{/metrics}}
class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="{{name}}",
            version="0.1.0",
            description="TODO: say in one sentence what this runbook detects and does",
            alerts=["{{alert}}"],
        )

    def detect(self, ctx) -> Detection:
        cfg = sdk.Config(ctx)
        findings = []
        healthy = True
{{#metrics}}
        limit = cfg.float("max_error_ratio", 0.05)
        samples = metrics.query(cfg.str("error_ratio_query", ERROR_RATIO))
        ratio = samples[0].value if samples else 0.0
        bad = ratio >= limit
        healthy = healthy and not bad
        findings.append(sdk.finding(
            Severity.CRITICAL if bad else Severity.INFO,
            f"error ratio {sdk.percent(ratio)} (threshold {sdk.percent(limit)})",
            ratio=f"{ratio:.4f}",
        ))
{{/metrics}}{{#database}}
        pool = database.stats()
        usage = pool.total / max(pool.max_connections, 1)
        full = usage >= cfg.float("max_usage_ratio", 0.9)
        healthy = healthy and not full
        findings.append(sdk.finding(
            Severity.CRITICAL if full else Severity.INFO,
            f"{pool.total} of {pool.max_connections} connections in use",
            usage=sdk.percent(usage),
        ))
        for s in database.long_running(cfg.int("long_query_ms", 60000), 50):
            healthy = False
            findings.append(sdk.finding(
                Severity.WARNING,
                f"session {s.pid} ({s.application_name}) {s.state} for {s.duration_ms} ms",
                pid=str(s.pid),
            ))
{{/database}}
        sdk.info(f"{len(findings)} finding(s), healthy: {healthy}")
        return Detection(healthy=healthy, findings=findings)

    def mitigate(self, ctx, detection) -> Outcome:
        actions = sdk.Actions()
{{#database}}        cfg = sdk.Config(ctx)
        limit = cfg.int("max_terminations", 5)
        for s in database.long_running(cfg.int("long_query_ms", 60000), 50):
            if actions.attempted >= limit:
                break
            reason = f"{s.state} for {s.duration_ms} ms"
            actions.record(f"pid:{s.pid}", lambda: database.terminate(s.pid, reason))
{{/database}}        steps = ["TODO: what a human must still do"]
        steps += [f"Not done, do by hand: {n}" for n in actions.not_done]
        verb = "would take" if ctx.dry_run else "took"
        return Outcome(
            summary=f"{verb} {actions.attempted} action(s)",
            mitigated=actions.executed > 0 and not actions.not_done,
            manual_steps=steps,
        )
