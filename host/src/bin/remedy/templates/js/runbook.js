// {{name}}: a Remedy runbook.
//
// u64 arguments are BigInt under componentize-js (StarlingMonkey); with
// jco's QuickJS backend they are plain numbers: drop the BigInt(...) calls.
//
// Build: npx componentize-js --wit wit --world-name runbook -d http -d fetch-event -o {{name}}.wasm runbook.js
// Test:  remedy test {{name}}.wasm
//
// Config keys (under [plugins.{{name}}] in remedy.toml, or [config] in a fixture):
{{#metrics}}// - error_ratio_query: PromQL giving the ratio to watch.
// - max_error_ratio (0.05): at or above it, the system is unhealthy.
{{/metrics}}{{#database}}// - max_usage_ratio (0.9): connection use at or above it is critical.
// - long_query_ms (60000): a session busy longer than this is a leak suspect.
// - max_terminations (5): most sessions terminated in one run.
{{/database}}
{{#metrics}}import { query } from 'remedy:plugin/metrics@0.1.0';
{{/metrics}}{{#database}}import { stats, longRunning, terminate } from 'remedy:plugin/database@0.1.0';
{{/database}}import { Actions, Config, finding, info, percent } from './remedy.js';

{{#metrics}}const ERROR_RATIO = 'sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))';

{{/metrics}}export function describe() {
  return {
    name: '{{name}}',
    version: '0.1.0',
    description: 'TODO: say in one sentence what this runbook detects and does',
    alerts: ['{{alert}}'],
  };
}

export function detect(ctx) {
  const cfg = new Config(ctx);
  const findings = [];
  let healthy = true;
{{#metrics}}
  const limit = cfg.float('max_error_ratio', 0.05);
  const samples = query(cfg.str('error_ratio_query', ERROR_RATIO));
  const ratio = samples.length ? samples[0].value : 0;
  const bad = ratio >= limit;
  healthy = healthy && !bad;
  findings.push(finding(bad ? 'critical' : 'info',
    `error ratio ${percent(ratio)} (threshold ${percent(limit)})`, { ratio: ratio.toFixed(4) }));
{{/metrics}}{{#database}}
  const pool = stats();
  const usage = pool.total / Math.max(pool.maxConnections, 1);
  const full = usage >= cfg.float('max_usage_ratio', 0.9);
  healthy = healthy && !full;
  findings.push(finding(full ? 'critical' : 'info',
    `${pool.total} of ${pool.maxConnections} connections in use`, { usage: percent(usage) }));
  for (const s of longRunning(BigInt(cfg.int('long_query_ms', 60000)), 50)) {
    healthy = false;
    findings.push(finding('warning',
      `session ${s.pid} (${s.applicationName}) ${s.state} for ${s.durationMs} ms`, { pid: String(s.pid) }));
  }
{{/database}}
  info(`${findings.length} finding(s), healthy: ${healthy}`);
  return { healthy, findings };
}

export function mitigate(ctx, detection) {
  const actions = new Actions();
{{#database}}  const cfg = new Config(ctx);
  const limit = cfg.int('max_terminations', 5);
  for (const s of longRunning(BigInt(cfg.int('long_query_ms', 60000)), 50)) {
    if (actions.attempted >= limit) break;
    const reason = `${s.state} for ${s.durationMs} ms`;
    actions.record(`pid:${s.pid}`, () => terminate(s.pid, reason));
  }
{{/database}}  const manualSteps = ['TODO: what a human must still do',
    ...actions.notDone.map((n) => `Not done, do by hand: ${n}`)];
  const verb = ctx.dryRun ? 'would take' : 'took';
  return {
    summary: `${verb} ${actions.attempted} action(s)`,
    mitigated: actions.executed > 0 && actions.notDone.length === 0,
    manualSteps,
  };
}
