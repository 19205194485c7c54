//! In-process single-flight: concurrent requests for one key share one computation.
//!
//! The first request of a key (the leader) starts the work as its own task; requests
//! that arrive while it runs await the same result. The task removes its entry when it
//! ends, so a leader whose client hung up neither cancels the followers' answer nor
//! leaves an entry behind that would serve an old result forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// One computation per key at a time.
pub struct Flights<T: Clone> {
    in_flight: Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, T>>>>>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Runs `work` for `key` unless a run for `key` is in flight, and returns its output
    /// and whether this call started it (`true`: leader, `false`: coalesced). `failed`
    /// turns a panic of the work into an output for everyone waiting.
    pub async fn run<F>(&self, key: &str, work: F, failed: fn(String) -> T) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, leader) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let map = self.in_flight.clone();
                    let owned_key = key.to_owned();
                    let task = tokio::spawn(async move {
                        let output = work.await;
                        map.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&owned_key);
                        output
                    });
                    let flight = async move {
                        task.await
                            .unwrap_or_else(|e| failed(format!("the shared read failed: {e}")))
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(key.to_owned(), flight.clone());
                    (flight, true)
                }
            }
        };
        (flight.await, leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_one_run_and_later_calls_start_a_new_one() {
        let flights: Arc<Flights<usize>> = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let flights = flights.clone();
            let runs = runs.clone();
            let mut gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let work = async move {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.wait_for(|open| *open).await.unwrap();
                    n
                };
                flights.run("k", work, |_| 0).await
            }));
        }
        // Every task has joined the flight once it is registered and still blocked.
        while flights.in_flight.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        let mut leaders = 0;
        for task in tasks {
            let (n, leader) = task.await.unwrap();
            assert_eq!(n, 1, "everyone got the one run's output");
            leaders += usize::from(leader);
        }
        assert_eq!(leaders, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let (n, leader) = flights.run("k", async { 7 }, |_| 0).await;
        assert_eq!((n, leader), (7, true), "a finished flight is not reused");
    }
}
