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
    -- The replica that wrote it last: it finishes the run and owns its
    -- verification; a survivor takes both over when its lease expires.
    replica TEXT NOT NULL DEFAULT '',
    record TEXT NOT NULL
);
CREATE INDEX runs_replica ON runs(replica, status);
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
    cooldown_key TEXT,
    replica TEXT NOT NULL DEFAULT ''
);
CREATE INDEX actions_budget ON actions(plugin, kind, at);
CREATE INDEX actions_cooldown ON actions(plugin, cooldown_key, at);
CREATE INDEX actions_status ON actions(status);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Cluster coordination. Times here are the database's own clock (now()),
-- so replicas whose clocks disagree still agree on who is alive.

-- One row per running replica, its heartbeat renewed every second; a row
-- older than the lease is a replica that died, and a survivor takes over
-- its runs, intents, flights and verifications, then removes the row.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    lease_ms BIGINT NOT NULL
);

-- Named leases (`scheduler`): held by one replica until it stops renewing.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Single flight per (plugin, target) across replicas.
CREATE TABLE flights (
    plugin TEXT NOT NULL,
    target TEXT NOT NULL,
    run_id TEXT NOT NULL,
    replica TEXT NOT NULL,
    PRIMARY KEY (plugin, target)
);
CREATE INDEX flights_replica ON flights(replica);

-- Each schedule tick, claimed once: a scheduler that lost its lease without
-- knowing it (paused, partitioned) cannot run a tick its successor ran.
CREATE TABLE ticks (
    plugin TEXT NOT NULL,
    schedule TEXT NOT NULL,
    tick TEXT NOT NULL,
    replica TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, schedule, tick)
);
CREATE INDEX ticks_claimed ON ticks(claimed_at);
