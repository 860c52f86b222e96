-- Console sessions, shared by every replica: a session opened on one is
-- valid on all, and a logout on one ends it on all. The cookie's id is
-- never stored, only its SHA-256; nor is the token's value, only its name
-- and a hash binding the two. Expiry is the database's clock (as the
-- heartbeats'), so replicas whose clocks disagree agree on it.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    binding TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expires ON sessions(expires_at);
