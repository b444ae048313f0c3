//! What workers record as they drive a run: its start and end on the run and on
//! its environment together, and the run's queue row beside them.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{Change, Lifecycle, LifecycleError, append_all};
use crate::domain::environment::{Environment, EnvironmentCommand, RunOutcome};
use crate::domain::run::{self, Run, RunCommand, RunStatus};
use crate::domain::{Aggregate, StreamRef};
use crate::run_queue;
use crate::store::{AppendError, Metadata};

impl Lifecycle {
    /// Claims the oldest unfinished run of some environment for `worker` (see
    /// [`run_queue::claim`]).
    pub async fn claim_run(&self, worker: &str, lease: Duration) -> Result<Option<Uuid>, LifecycleError> {
        Ok(run_queue::claim(self.store.pool(), worker, lease).await?)
    }

    /// Extends `worker`'s lease on a run; `false` when another worker took it over.
    pub async fn renew_lease(&self, run_id: Uuid, worker: &str, lease: Duration) -> Result<bool, LifecycleError> {
        Ok(run_queue::renew(self.store.pool(), run_id, worker, lease).await?)
    }

    /// Whether the run has been cancelled.
    pub async fn is_cancelled(&self, run_id: Uuid) -> Result<bool, LifecycleError> {
        let (run, _) = self.load::<Option<Run>>(&StreamRef::Run(run_id)).await?;
        Ok(run.is_some_and(|run| run.status == RunStatus::Cancelled))
    }

    /// Records that `worker` started the run (read at `version`), on the run and
    /// on its environment in one transaction. When the run changed since it was
    /// read (say, it was cancelled), nothing is written: the caller reads it again.
    pub async fn start_run(
        &self,
        run: &Run,
        version: u64,
        worker: &str,
        metadata: &Metadata,
    ) -> Result<(), LifecycleError> {
        let now = Utc::now();
        let events = run::decide(run, RunCommand::Start { worker: worker.to_owned(), now })?;
        let env_stream = StreamRef::environment(&run.application, &run.environment);
        let (env, env_version) = self.load::<Environment>(&env_stream).await?;
        // An environment that no longer queues the run (torn down meanwhile) has
        // nothing to record.
        let env_events = env.decide(EnvironmentCommand::MarkStarted { run_id: run.run_id, now }).unwrap_or_default();
        let changes = [
            Change::new(&StreamRef::Run(run.run_id), version, &events, metadata),
            Change::new(&env_stream, env_version, &env_events, metadata),
        ];
        let mut tx = self.store.pool().begin().await?;
        match append_all(&self.store, &mut tx, &changes).await {
            Err(LifecycleError::Store(AppendError::Conflict { stream_id, .. })) if stream_id == changes[0].stream() => {
                Ok(())
            }
            other => {
                other?;
                self.commit(tx).await
            }
        }
    }

    /// Records the run's outcome on its environment and takes it off the queue.
    pub async fn finish_run(
        &self,
        run: &Run,
        images: Vec<(String, String)>,
        metadata: &Metadata,
    ) -> Result<(), LifecycleError> {
        let outcome = match run.status {
            RunStatus::Succeeded => RunOutcome::Succeeded,
            RunStatus::Cancelled => RunOutcome::Cancelled,
            RunStatus::Rejected => RunOutcome::Rejected,
            _ => RunOutcome::Failed,
        };
        let images = if outcome == RunOutcome::Succeeded { images } else { Vec::new() };
        let env_stream = StreamRef::environment(&run.application, &run.environment);
        self.with_retries(|| async {
            let (env, env_version) = self.load::<Environment>(&env_stream).await?;
            let in_queue = env.queue.iter().any(|q| q.run_id == run.run_id);
            let events = if in_queue && run.status != RunStatus::Skipped {
                let command = EnvironmentCommand::MarkFinished {
                    run_id: run.run_id,
                    outcome,
                    images: images.clone(),
                    now: Utc::now(),
                };
                env.decide(command)?
            } else {
                Vec::new()
            };
            let mut tx = self.store.pool().begin().await?;
            append_all(&self.store, &mut tx, &[Change::new(&env_stream, env_version, &events, metadata)]).await?;
            run_queue::done(&mut tx, run.run_id).await?;
            self.commit(tx).await
        })
        .await
    }
}
