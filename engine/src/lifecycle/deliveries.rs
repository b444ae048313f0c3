//! Webhook deliveries at least once: everything a delivery does (its runs, the
//! previews it creates, the skips it records) is written in one transaction
//! together with the delivery's record (`webhook_deliveries`), so a delivery is
//! either recorded with what it did or did nothing, whenever shiplog stops.

use uuid::Uuid;

use super::{Lifecycle, LifecycleError};
use crate::push::PushOutcome;
use crate::store::AppendError;
use crate::webhook_deliveries::{self, Delivery};

/// How often a delivery is decided again when a stream it changes moved meanwhile.
const CONFLICT_RETRIES: usize = 5;

/// Why a delivery was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// It was acted on before: nothing was done.
    #[error("delivery {0} was received before; nothing was done")]
    Replayed(String),
    /// An internal error stopped it: nothing was written, and a redelivery of it
    /// is acted on again.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// What a delivery did.
#[derive(Debug)]
pub struct Delivered {
    pub outcome: PushOutcome,
    /// `false` when an environment failed for an internal reason: what the others
    /// did is written, and the delivery is recorded `failed`, so that a
    /// redelivery tries again (it requests no run twice: deploys are once per
    /// commit and environment).
    pub complete: bool,
}

impl Lifecycle {
    /// Acts on `delivery` with `act` (given a batched lifecycle, see
    /// [`Lifecycle::batched`]) and writes all it decided together with the
    /// delivery's record, in one transaction. Refused with
    /// [`DeliveryError::Replayed`] when the delivery was acted on before, or by a
    /// concurrent delivery of it that committed first; in both cases nothing is
    /// written. A conflict with another writer decides it again.
    #[tracing::instrument(skip_all, fields(provider = delivery.provider, delivery = %delivery.id), err)]
    pub async fn deliver<F, Fut>(&self, delivery: &Delivery, act: F) -> Result<Delivered, DeliveryError>
    where
        F: Fn(Lifecycle) -> Fut,
        Fut: Future<Output = Result<PushOutcome, LifecycleError>>,
    {
        if webhook_deliveries::done(self.store.pool(), delivery).await.map_err(LifecycleError::from)? {
            return Err(DeliveryError::Replayed(delivery.id.clone()));
        }
        for _ in 0..CONFLICT_RETRIES {
            let batched = self.batched();
            let written = match act(batched.clone()).await {
                Ok(outcome) => batched.write_delivery(delivery, outcome).await,
                Err(error) => Err(DeliveryError::Lifecycle(error)),
            };
            match written {
                Err(DeliveryError::Lifecycle(LifecycleError::Store(AppendError::Conflict { .. }))) => continue,
                Err(DeliveryError::Lifecycle(error)) => {
                    self.record_failed(delivery).await;
                    return Err(error.into());
                }
                other => return other,
            }
        }
        self.record_failed(delivery).await;
        Err(LifecycleError::Contended.into())
    }

    /// Writes the batch and the delivery's record in one transaction.
    async fn write_delivery(&self, delivery: &Delivery, outcome: PushOutcome) -> Result<Delivered, DeliveryError> {
        let complete = outcome.failed.iter().all(|failure| failure.error.is_refusal());
        let runs: Vec<Uuid> = outcome.runs.iter().map(|run| run.run_id).collect();
        let mut tx = self.write_batch().await?;
        if !webhook_deliveries::record(&mut tx, delivery, complete, &runs).await.map_err(LifecycleError::from)? {
            return Err(DeliveryError::Replayed(delivery.id.clone()));
        }
        self.commit(tx).await?;
        Ok(Delivered { outcome, complete })
    }

    /// Records that an internal error stopped the delivery, for whoever looks; a
    /// failure to record it is only logged (a delivery not recorded is acted on
    /// when redelivered all the same).
    async fn record_failed(&self, delivery: &Delivery) {
        let recorded = async {
            let mut connection = self.store.pool().acquire().await?;
            webhook_deliveries::record(&mut connection, delivery, false, &[]).await
        };
        if let Err(error) = recorded.await {
            tracing::warn!(error = %error, "recording a failed webhook delivery failed");
        }
    }
}
