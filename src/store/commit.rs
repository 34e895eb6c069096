//! Group commit: every writer waiting for durability shares one flush.
//!
//! A writer inserts its records, then asks [`GroupCommit::durable`]. The
//! committer task takes every request queued so far, flushes once, and
//! answers them all; requests that arrive during that flush wait for the
//! next one. A request is queued only after its writes were made, so the
//! flush that follows its dequeue covers them. Under load one fsync serves
//! hundreds of writers, which is what keeps durable journaling from
//! serialising throughput.
//!
//! The task holds the database only while it flushes (each request brings
//! a handle along): once the store is dropped and the last flush is done,
//! sled closes and releases its lock at once, so another process (or a
//! test) can open it right away.

use tokio::sync::{mpsc, oneshot};

use super::{Durability, StoreError};

type Waiter = (oneshot::Sender<Result<(), String>>, sled::Db);

/// The committer of one database.
#[derive(Debug)]
pub struct GroupCommit {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Nothing waits: sled flushes on its own timer.
    Relaxed,
    /// The committer task's queue, and the database requests bring along.
    Grouped(mpsc::UnboundedSender<Waiter>, sled::Db),
    /// No runtime to run a committer on: each caller flushes.
    Direct(sled::Db),
}

impl GroupCommit {
    /// Starts the committer; outside a Tokio runtime writes are flushed
    /// synchronously instead (commands that write once and exit).
    pub fn start(db: sled::Db, durability: Durability) -> GroupCommit {
        if durability == Durability::Relaxed {
            return GroupCommit {
                mode: Mode::Relaxed,
            };
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return GroupCommit {
                mode: Mode::Direct(db),
            };
        };
        let (queue, mut requests) = mpsc::unbounded_channel::<Waiter>();
        runtime.spawn(async move {
            let mut batch = Vec::new();
            while let Some((first, db)) = requests.recv().await {
                batch.push(first);
                while let Ok((next, _)) = requests.try_recv() {
                    batch.push(next);
                }
                // A blocking flush on Tokio's blocking pool, not sled's
                // `flush_async`: that one runs the flush on sled's own I/O
                // pool, and a flush waiting there for I/O queued behind it
                // on the same pool was seen to hang a loaded process.
                let result = tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|flushed| flushed.map(drop).map_err(|e| e.to_string()));
                for waiter in batch.drain(..) {
                    // A writer that stopped waiting has nothing to hear.
                    let _ = waiter.send(result.clone());
                }
            }
        });
        GroupCommit {
            mode: Mode::Grouped(queue, db),
        }
    }

    /// Resolves once every write made before the call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (queue, db) = match &self.mode {
            Mode::Relaxed => return Ok(()),
            Mode::Direct(db) => {
                return db
                    .flush()
                    .map(drop)
                    .map_err(|e| StoreError::Sled(format!("flush failed: {e}")));
            }
            Mode::Grouped(queue, db) => (queue, db),
        };
        let (reply, heard) = oneshot::channel();
        queue
            .send((reply, db.clone()))
            .map_err(|_| StoreError::Closed)?;
        match heard.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::Sled(format!("flush failed: {message}"))),
            Err(_) => Err(StoreError::Closed),
        }
    }
}
