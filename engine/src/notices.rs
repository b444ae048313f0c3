//! `LISTEN` on one PostgreSQL channel, shared by a whole process: each payload is
//! parsed once and handed to every subscriber, and a moment in which notices may
//! have been lost (the listening connection dropped) is said as such, so that
//! subscribers check the database instead of trusting that nothing happened.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

/// What a subscriber hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<T> {
    /// A notice committed with this payload.
    Payload(T),
    /// Notices may have been missed: the listener's connection dropped, or the
    /// subscriber fell behind the channel's backlog.
    Missed,
}

/// One channel's notices, as they commit, from any process on the database.
/// Cheap to clone; stops listening (releasing its connection: a pool does not
/// close while a listener holds one) when the last clone is dropped.
#[derive(Clone)]
pub struct Notices<T> {
    news: broadcast::Sender<Notice<T>>,
    _stop: Arc<DropGuard>,
}

/// How long the listener waits before listening again after a failure.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

impl<T: FromStr + Clone + Send + 'static> Notices<T> {
    /// Starts listening on `channel`; a subscriber may fall `backlog` notices
    /// behind before it hears [`Notice::Missed`]. Payloads that do not parse as
    /// `T` are not anyone's and are dropped.
    pub async fn listen(pool: &PgPool, channel: &str, backlog: usize) -> sqlx::Result<Notices<T>> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        let (news, _) = broadcast::channel(backlog);
        let stop = CancellationToken::new();
        let (sender, stopped) = (news.clone(), stop.clone());
        let channel = channel.to_owned();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    received = listener.try_recv() => received,
                    _ = stopped.cancelled() => return,
                };
                match received {
                    Ok(Some(notification)) => {
                        if let Ok(payload) = notification.payload().parse::<T>() {
                            let _ = sender.send(Notice::Payload(payload));
                        }
                    }
                    // The connection dropped (the next call reconnects): notices sent
                    // meanwhile are lost.
                    Ok(None) => {
                        let _ = sender.send(Notice::Missed);
                    }
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "listening failed; retrying");
                        let _ = sender.send(Notice::Missed);
                        tokio::time::sleep(LISTEN_RETRY).await;
                    }
                }
            }
        });
        Ok(Notices { news, _stop: Arc::new(stop.drop_guard()) })
    }

    /// Notices committed from now on.
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver(self.news.subscribe())
    }
}

/// One subscriber's notices.
pub struct Receiver<T>(broadcast::Receiver<Notice<T>>);

impl<T: Clone> Receiver<T> {
    /// The next notice; `None` once the listener has stopped.
    pub async fn recv(&mut self) -> Option<Notice<T>> {
        match self.0.recv().await {
            Ok(notice) => Some(notice),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Notice::Missed),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
