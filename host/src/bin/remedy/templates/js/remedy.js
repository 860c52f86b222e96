// Helpers for Remedy runbooks in JavaScript (written by `remedy new`): typed
// config lookups, findings, the action tally, logging and error text.
import { log } from 'remedy:plugin/log@0.1.0';

/** An `invalid` error to throw from detect/mitigate. */
export function invalid(message) {
  return { tag: 'invalid', val: message };
}

/** `kind: message` for a host error (thrown by a host call). */
export function errorText(e) {
  const v = e && e.payload !== undefined ? e.payload : e;
  if (v && v.tag) return `${v.tag}: ${v.val}`;
  return String(v);
}

/** The run's config (its `[config]` keys, as strings) with defaults. */
export class Config {
  constructor(ctx) {
    this.pairs = new Map(ctx.config);
  }
  get(key) {
    const v = (this.pairs.get(key) || '').trim();
    return v === '' ? undefined : v;
  }
  str(key, dflt) {
    return this.get(key) ?? dflt;
  }
  float(key, dflt) {
    const v = this.get(key);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (Number.isNaN(n)) throw invalid(`config key \`${key}\`: cannot parse \`${v}\``);
    return n;
  }
  int(key, dflt) {
    const n = this.float(key, dflt);
    if (!Number.isInteger(n)) throw invalid(`config key \`${key}\`: not a whole number`);
    return n;
  }
  list(key, dflt) {
    const v = this.get(key);
    if (v === undefined) return [...dflt];
    return v.split(',').map((x) => x.trim()).filter((x) => x);
  }
}

export function finding(severity, summary, evidence = {}) {
  return { severity, summary, evidence: Object.entries(evidence).map(([k, v]) => [k, String(v)]) };
}

export function percent(ratio) {
  return `${(ratio * 100).toFixed(1)}%`;
}

export function info(message) {
  log('info', message);
}

export function warn(message) {
  log('warn', message);
}

/** A label of the alert that triggered the run, if any. */
export function alertLabel(ctx, name) {
  if (ctx.trigger.tag !== 'alert') return undefined;
  const hit = ctx.trigger.val.labels.find(([k]) => k === name);
  return hit ? hit[1] : undefined;
}

/** Tally of the gated actions a mitigation attempted. */
export class Actions {
  constructor() {
    this.executed = 0;
    this.simulated = 0;
    this.notDone = [];
  }
  get attempted() {
    return this.executed + this.simulated;
  }
  /** Calls `call()` (a mutating host call) and counts its answer. */
  record(target, call) {
    try {
      const applied = call();
      if (applied === 'executed') this.executed += 1;
      else this.simulated += 1;
      return applied;
    } catch (e) {
      this.notDone.push(`${target}: ${errorText(e)}`);
      return undefined;
    }
  }
}
