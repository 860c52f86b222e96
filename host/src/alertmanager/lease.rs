//! A silence held as a lease: Remedy silences the alert it is acting on so
//! that nobody is paged for what is being fixed, but only for a short
//! lease, renewed while the run and its verification last. A replica that
//! dies stops renewing, and the silence lapses by itself within the lease;
//! a survivor that takes the run over adopts it by its id.

use crate::locks::MutexExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AlertSource, Matcher, NewSilence};
use crate::backends::BackendResult;

pub struct SilenceLease {
    source: Arc<dyn AlertSource>,
    /// Alertmanager may answer an update with a new id.
    id: Mutex<String>,
    matchers: Vec<Matcher>,
    comment: String,
    lease: Duration,
    /// Kept across renewals: Alertmanager updates an active silence in
    /// place only when its start is unchanged.
    started: DateTime<Utc>,
}

impl SilenceLease {
    /// Silences the alert with exactly `labels` until `lease` from now.
    pub async fn take(
        source: Arc<dyn AlertSource>,
        labels: &BTreeMap<String, String>,
        comment: String,
        lease: Duration,
    ) -> BackendResult<Arc<SilenceLease>> {
        Self::adopt(source, None, labels, comment, lease).await
    }

    /// Takes over the silence `id` (another process's), renewing it now;
    /// with no id, a new one.
    pub async fn adopt(
        source: Arc<dyn AlertSource>,
        id: Option<String>,
        labels: &BTreeMap<String, String>,
        comment: String,
        lease: Duration,
    ) -> BackendResult<Arc<SilenceLease>> {
        let matchers: Vec<Matcher> = labels.iter().map(|(k, v)| Matcher::eq(k, v)).collect();
        // The same start, so that Alertmanager renews it in place.
        let started = match &id {
            Some(id) => source.silence(id).await?.starts_at,
            None => None,
        };
        let l = SilenceLease {
            source,
            id: Mutex::new(id.unwrap_or_default()),
            matchers,
            comment,
            lease,
            started: started.unwrap_or_else(Utc::now),
        };
        l.renew().await?;
        Ok(Arc::new(l))
    }

    pub fn id(&self) -> String {
        self.id.locked().clone()
    }

    /// Moves the end to a lease from now.
    pub async fn renew(&self) -> BackendResult<()> {
        let id = self.id();
        let now = Utc::now();
        let s = NewSilence {
            id: (!id.is_empty()).then_some(id),
            matchers: self.matchers.clone(),
            starts_at: self.started,
            ends_at: now + chrono::Duration::from_std(self.lease).unwrap_or_default(),
            created_by: super::guard::CREATED_BY.to_string(),
            comment: self.comment.clone(),
        };
        let new = self.source.put_silence(&s).await?;
        *self.id.locked() = new;
        Ok(())
    }

    /// Ends the silence now.
    pub async fn end(&self) -> BackendResult<()> {
        self.source.expire_silence(&self.id()).await
    }

    /// Renews the lease every third of it until the answer is dropped.
    pub fn keep(self: &Arc<Self>) -> Keeper {
        let me = self.clone();
        let every = (self.lease / 3).max(Duration::from_millis(200));
        Keeper(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me.renew().await {
                    tracing::warn!(silence = %me.id(), error = %e, "silence not renewed: it lapses at the end of its lease");
                }
            }
        }))
    }
}

/// Renews a lease while held.
pub struct Keeper(tokio::task::JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The leases this process holds, by the run they serve: taken by the
/// gate when a run starts acting, held on after the run through its
/// verification, ended by the service.
#[derive(Default)]
pub struct SilenceLeases {
    held: Mutex<HashMap<String, (Arc<SilenceLease>, Keeper)>>,
}

impl SilenceLeases {
    pub fn hold(&self, run: &str, lease: Arc<SilenceLease>) {
        let keeper = lease.keep();
        self.lock().insert(run.to_string(), (lease, keeper));
    }

    /// Stops renewing run `run`'s silence without ending it: another
    /// process took the run over (and adopted the silence).
    pub fn release(&self, run: &str) {
        self.lock().remove(run);
    }

    /// The silence run `run` holds, if any.
    pub fn id_of(&self, run: &str) -> Option<String> {
        self.lock().get(run).map(|(l, _)| l.id())
    }

    /// Ends run `run`'s silence (renewal stops, the silence expires now);
    /// answers its id, or an error for the record.
    pub async fn end(&self, run: &str) -> Option<Result<String, String>> {
        let (lease, keeper) = self.lock().remove(run)?;
        drop(keeper);
        let id = lease.id();
        Some(match lease.end().await {
            Ok(()) => Ok(id),
            Err(e) => Err(format!(
                "silence {id} not expired ({e}): it lapses at the end of its lease"
            )),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<SilenceLease>, Keeper)>> {
        self.held.locked()
    }
}
