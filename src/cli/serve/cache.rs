//! A cache of what the backends said, by key, for a few seconds: many requests in one
//! interval share one read, and concurrent requests for a key wait for the one read in
//! flight instead of starting their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys kept at most; the oldest read is dropped first.
const MAX_KEYS: usize = 64;

type Slot<V> = Arc<tokio::sync::Mutex<Option<(Instant, Arc<V>)>>>;

/// Values of type `V` by key, each reused for `ttl` after it was read.
pub struct Cache<V> {
    ttl: Duration,
    slots: Mutex<HashMap<String, Slot<V>>>,
}

impl<V> Cache<V> {
    /// An empty cache whose values live for `ttl`.
    pub fn new(ttl: Duration) -> Cache<V> {
        Cache {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &str) -> Slot<V> {
        let mut slots = self.slots.lock().expect("cache lock");
        if !slots.contains_key(key) && slots.len() >= MAX_KEYS {
            // The slot read longest ago (or never) goes; one in use stays alive
            // through its Arc until its reader is done.
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| {
                    s.try_lock()
                        .ok()
                        .and_then(|v| v.as_ref().map(|(at, _)| *at))
                })
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
        slots.entry(key.to_string()).or_default().clone()
    }

    /// The value under `key`: the cached one while it is fresh, else what `read`
    /// returns (cached when it succeeds; an error is not cached).
    pub async fn get<F, Fut>(&self, key: &str, read: F) -> anyhow::Result<Arc<V>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<V>>,
    {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some((at, value)) = held.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let value = Arc::new(read().await?);
        *held = Some((Instant::now(), value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_one_read_until_it_goes_stale() {
        let cache: Arc<Cache<usize>> = Arc::new(Cache::new(Duration::from_millis(300)));
        let reads = Arc::new(AtomicUsize::new(0));
        let read = |reads: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move { *cache.get("k", || read(reads)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(*cache.get("k", || read(reads.clone())).await.unwrap(), 2);
        // Another key reads on its own; an error is not kept.
        assert!(
            cache
                .get("e", || async { anyhow::bail!("down") })
                .await
                .is_err()
        );
        assert_eq!(*cache.get("e", || read(reads.clone())).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn the_cache_keeps_a_bounded_number_of_keys() {
        let cache: Cache<usize> = Cache::new(Duration::from_secs(60));
        for i in 0..(MAX_KEYS * 2) {
            cache
                .get(&i.to_string(), || async move { Ok(i) })
                .await
                .unwrap();
        }
        assert!(cache.slots.lock().unwrap().len() <= MAX_KEYS);
    }
}
