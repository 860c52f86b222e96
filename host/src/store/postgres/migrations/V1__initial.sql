-- The shared store of one or more `remedy serve` replicas. Timestamps are
-- the fixed-width RFC 3339 text Remedy writes everywhere (`record::timestamp`),
-- so they compare as text, as in the SQLite store.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    alert_fingerprint TEXT,
    alert_starts_at TEXT,
    record TEXT NOT NULL
);
CREATE INDEX runs_started ON runs(started_at);
CREATE INDEX runs_plugin ON runs(plugin, started_at);
CREATE INDEX runs_status ON runs(status);
CREATE INDEX runs_alert ON runs(plugin, alert_fingerprint, alert_starts_at);

-- One row per (fingerprint, start, status): a notification that several
-- replicas (or Alertmanager HA peers) receive is stored, and acted on, once.
CREATE TABLE alerts (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    received_at TEXT NOT NULL,
    alert TEXT NOT NULL,
    PRIMARY KEY (fingerprint, starts_at, status)
);
CREATE INDEX alerts_received ON alerts(received_at);

CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at TEXT NOT NULL,
    run_id TEXT,
    plugin TEXT,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_run ON audit(run_id);
CREATE INDEX audit_at ON audit(at);

-- Live actions, written ahead (see the SQLite store's schema).
CREATE TABLE actions (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    settled_at TEXT,
    error TEXT,
    cooldown_key TEXT
);
CREATE INDEX actions_budget ON actions(plugin, kind, at);
CREATE INDEX actions_cooldown ON actions(plugin, cooldown_key, at);
CREATE INDEX actions_status ON actions(status);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
