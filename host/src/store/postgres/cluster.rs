//! How replicas coordinate through the PostgreSQL store. Every decision is a
//! row the database arbitrates, timed by its own clock (`now()`): a
//! heartbeat per replica, leases that expire, a flight row per (plugin,
//! target), a claim row per schedule tick, and a take-over transaction that
//! turns a silent replica's work into this one's.

use super::{pg, put_run_in, Fence, PgStore};
use crate::action::ActionKind;
use crate::record::{timestamp as ts, ActionRecord, Applied, RunRecord, RunStatus};
use crate::store::rules::{ACTION_INTERRUPTED, RUN_INTERRUPTED};
use crate::store::{Orphans, ReplicaRow, StoreError};

/// A `timestamptz` column as the RFC 3339 text the rest of Remedy writes.
fn text_time(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// `heartbeat_at` is older than the replica's own lease.
const EXPIRED: &str = "heartbeat_at < now() - lease_ms * interval '1 millisecond'";

impl PgStore {
    pub(super) async fn register(&self) -> Result<(), StoreError> {
        let me = self.current();
        self.client()
            .await?
            .execute(
                "INSERT INTO replicas (id, name, version, started_at, heartbeat_at, lease_ms) \
                 VALUES ($1, $2, $3, now(), now(), $4) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                &[
                    &&*me,
                    &self.me.name,
                    &env!("CARGO_PKG_VERSION"),
                    &(self.me.lease.as_millis() as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn beat(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE replicas SET heartbeat_at = now() WHERE id = $1",
                &[&&*self.current()],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            // Our heartbeat was late enough for a survivor to take our work
            // over: what we ran was marked interrupted, what we queued was
            // moved. Come back as a new incarnation: every run the old one
            // claimed is fenced out (its writes and intents are refused).
            let next = self.reincarnate();
            tracing::error!(
                replica = %self.me.name,
                incarnation = %next,
                "this replica was taken over by another (its heartbeat was older than its lease); its runs are fenced out and dropped; registering again as a new incarnation"
            );
            self.register().await?;
        }
        let rows = c
            .query(
                &format!(
                    "SELECT id, name, version, {}, {}, lease_ms, NOT ({EXPIRED}) FROM replicas ORDER BY started_at, id",
                    text_time("started_at"),
                    text_time("heartbeat_at")
                ),
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| ReplicaRow {
                id: r.get(0),
                name: r.get(1),
                version: r.get(2),
                started_at: r.get::<_, Option<String>>(3).unwrap_or_default(),
                // `-infinity` (a replica that left) has no text.
                heartbeat_at: r.get::<_, Option<String>>(4).unwrap_or_default(),
                lease_ms: r.get::<_, i64>(5).max(0) as u64,
                alive: r.get(6),
            })
            .collect())
    }

    pub(super) async fn renew_lease(&self, name: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO leases (name, holder, expires_at) \
             VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < now()",
            &[&name, &&*self.current(), &(self.me.lease.as_millis() as i64)],
        )
        .await
        .map_err(pg)?;
        let row = c
            .query_opt(
                "SELECT holder FROM leases WHERE name = $1 AND expires_at >= now()",
                &[&name],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn claim_tick_row(
        &self,
        plugin: &str,
        schedule: &str,
        tick: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO ticks (plugin, schedule, tick, replica) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[&plugin, &schedule, &tick, &&*self.current()],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    pub(super) async fn claim_flight_row(
        &self,
        plugin: &str,
        target: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        if !crate::store::on_urgent_thread() {
            return self
                .batch
                .write(super::batch::Write::Claim {
                    plugin: plugin.to_string(),
                    target: target.to_string(),
                    run_id: run_id.to_string(),
                    owner: self.owner(),
                })
                .await;
        }
        let n = self
            .client()
            .await?
            .execute(
                super::CLAIM_FLIGHT,
                &[&plugin, &target, &run_id, &&*self.owner()],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    pub(super) async fn release_flight_row(
        &self,
        plugin: &str,
        target: &str,
        run_id: &str,
    ) -> Result<(), StoreError> {
        if !crate::store::on_urgent_thread() {
            return self
                .batch
                .write(super::batch::Write::Release {
                    plugin: plugin.to_string(),
                    target: target.to_string(),
                    run_id: run_id.to_string(),
                })
                .await
                .map(drop);
        }
        self.client()
            .await?
            .execute(
                "DELETE FROM flights WHERE plugin = $1 AND target = $2 AND run_id = $3",
                &[&plugin, &target, &run_id],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn drop_leases(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute("DELETE FROM leases WHERE holder = $1", &[&&*self.current()])
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn expire_self(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE replicas SET heartbeat_at = '-infinity' WHERE id = $1",
                &[&&*self.current()],
            )
            .await
            .map_err(pg)?;
        self.drop_leases().await
    }

    /// One transaction per call: every replica whose heartbeat is older
    /// than its lease (rows another survivor is already taking over are
    /// skipped, not waited for) has its running runs and unsettled intents
    /// marked `interrupted`, its queued runs and open verifications moved
    /// to this replica, its flights and leases released, and its row
    /// removed, with a `replica.lost` audit event.
    pub(super) async fn take_over_dead(&self) -> Result<Orphans, StoreError> {
        let me = self.current();
        let me: &str = &me;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let dead = tx
            .query(
                &format!(
                    "SELECT id, name, {} FROM replicas WHERE id <> $1 AND {EXPIRED} FOR UPDATE SKIP LOCKED",
                    text_time("heartbeat_at")
                ),
                &[&me],
            )
            .await
            .map_err(pg)?;
        let mut orphans = Orphans::default();
        let now = ts(chrono::Utc::now());
        let since = ts(chrono::Utc::now() - chrono::Duration::days(1));
        for row in dead {
            let (id, name, heartbeat): (String, String, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            let why = format!(
                "replica {name} sent no heartbeat since {}; {} took over",
                heartbeat.as_deref().unwrap_or("it stopped"),
                self.me.name
            );
            let mut interrupted = 0;
            for r in tx
                .query(
                    "SELECT record FROM runs WHERE replica = $1 AND status = 'running' FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(pg)?
            {
                let mut rec: RunRecord = serde_json::from_str(r.get(0))?;
                rec.status = RunStatus::Interrupted;
                rec.error = Some(format!("{RUN_INTERRUPTED} ({why})"));
                rec.finished_at = Some(chrono::Utc::now());
                put_run_in(&tx, me, &rec, Fence::Unfenced).await?;
                interrupted += 1;
            }
            let action_error = format!("{ACTION_INTERRUPTED} ({why})");
            let mut actions = 0;
            for r in tx
                .query(
                    "UPDATE actions SET status = 'interrupted', error = $2, settled_at = $3, replica = $4 \
                     WHERE replica = $1 AND status = 'intent' RETURNING run_id, plugin, kind, target, reason, at",
                    &[&id, &action_error, &now, &me],
                )
                .await
                .map_err(pg)?
            {
                let (run_id, plugin, kind): (String, String, String) =
                    (r.get(0), r.get(1), r.get(2));
                let Some(kind) = ActionKind::parse(&kind) else {
                    continue;
                };
                let at: String = r.get(5);
                let action = ActionRecord {
                    kind,
                    target: r.get(3),
                    reason: r.get(4),
                    applied: Applied::Interrupted,
                    error: Some(action_error.clone()),
                    at: chrono::DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .unwrap_or_else(|_| chrono::Utc::now()),
                    incident: None,
                    result: None,
                };
                if let Some(run) = tx
                    .query_opt(
                        "SELECT record FROM runs WHERE id = $1 FOR UPDATE",
                        &[&run_id],
                    )
                    .await
                    .map_err(pg)?
                {
                    let mut rec: RunRecord = serde_json::from_str(run.get(0))?;
                    rec.actions.push(action.clone());
                    put_run_in(&tx, me, &rec, Fence::Unfenced).await?;
                }
                tx.execute(
                    "INSERT INTO audit (at, run_id, plugin, event, detail) VALUES ($1, $2, $3, 'action.interrupted', $4)",
                    &[&now, &run_id, &plugin, &serde_json::to_string(&action)?],
                )
                .await
                .map_err(pg)?;
                actions += 1;
            }
            let queued = tx
                .query(
                    "UPDATE runs SET replica = $2 WHERE replica = $1 AND status = 'queued' RETURNING record",
                    &[&id, &me],
                )
                .await
                .map_err(pg)?;
            let mut queued = super::records(queued)?;
            queued.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
            let unverified = tx
                .query(
                    "UPDATE runs SET replica = $2 WHERE replica = $1 AND status = 'succeeded' \
                     AND started_at >= $3 RETURNING record",
                    &[&id, &me, &since],
                )
                .await
                .map_err(pg)?;
            let unverified: Vec<RunRecord> = super::records(unverified)?
                .into_iter()
                .filter(|r| {
                    !r.dry_run
                        && r.verification.is_none()
                        && r.actions.iter().any(|a| a.applied == Applied::Executed)
                })
                .collect();
            tx.execute("DELETE FROM flights WHERE replica = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM leases WHERE holder = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM replicas WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            let detail = serde_json::json!({
                "replica": id,
                "name": name,
                "heartbeat_at": heartbeat,
                "by": self.me.name,
                "runs_interrupted": interrupted,
                "actions_interrupted": actions,
                "queued_taken": queued.len(),
                "verifications_taken": unverified.len(),
            });
            tx.execute(
                "INSERT INTO audit (at, event, detail) VALUES ($1, 'replica.lost', $2)",
                &[&now, &detail.to_string()],
            )
            .await
            .map_err(pg)?;
            tracing::warn!(replica = %name, runs_interrupted = interrupted, actions_interrupted = actions,
                queued = queued.len(), verifications = unverified.len(), "took over a replica whose lease expired");
            orphans.queued.extend(queued);
            orphans.unverified.extend(unverified);
            orphans.replicas.push(name);
        }
        tx.commit().await.map_err(pg)?;
        Ok(orphans)
    }
}
