//! whatsapp-rust's LID ↔ phone-number cache for one session, bounded.
//!
//! The library keeps every mapping a session ever learned in memory, unbounded by design: a
//! mapping evicted from its own cache is gone, and Signal addresses silently fall back to the
//! phone number. A business account learns one mapping per contact, so memory per session
//! would grow with its contacts. Here the library's cache is this store: the recently used
//! entries in memory (at most [`CAPACITY`]), and a miss read from the device store, where the
//! library persists every mapping (`wa_lid_mappings`). Nothing is lost by eviction; a cold
//! lookup costs one indexed read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use whatsapp_rust::CacheStore;
use whatsapp_rust::lid_pn_cache::{LearningSource, LidPnEntry};
use whatsapp_rust::store::traits::Backend;

/// Entries kept in memory per namespace (two generations of half this each).
pub const CAPACITY: usize = 2048;

/// The library's namespaces for the two directions of the mapping.
const BY_LID: &str = "lid_pn_by_lid";
const BY_PN: &str = "lid_pn_by_pn";

pub struct LidCache {
    store: Arc<dyn Backend>,
    mem: Mutex<HashMap<String, Generations>>,
}

impl LidCache {
    pub fn new(store: Arc<dyn Backend>) -> Self {
        LidCache {
            store,
            mem: Mutex::default(),
        }
    }

    fn remember(&self, namespace: &str, key: &str, value: Vec<u8>) {
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), value);
    }

    /// The stored mapping for a key of `namespace`, as the library's cache serialises it.
    async fn load(&self, namespace: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let found = match namespace {
            BY_LID => self.store.get_lid_mapping(key).await?,
            BY_PN => self.store.get_pn_mapping(key).await?,
            _ => return Ok(None),
        };
        Ok(match found {
            None => None,
            Some(m) => Some(serde_json::to_vec(&LidPnEntry::with_timestamp(
                m.lid,
                m.phone_number,
                m.created_at,
                LearningSource::parse(&m.learning_source),
            ))?),
        })
    }
}

#[async_trait]
impl CacheStore for LidCache {
    async fn get(&self, namespace: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let hit = {
            let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
            mem.get_mut(namespace).and_then(|g| g.get(key))
        };
        if hit.is_some() {
            return Ok(hit);
        }
        let loaded = self.load(namespace, key).await?;
        if let Some(v) = &loaded {
            self.remember(namespace, key, v.clone());
        }
        Ok(loaded)
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        _ttl: Option<Duration>,
    ) -> anyhow::Result<()> {
        self.remember(namespace, key, value.to_vec());
        Ok(())
    }

    async fn delete(&self, namespace: &str, key: &str) -> anyhow::Result<()> {
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = mem.get_mut(namespace) {
            g.remove(key);
        }
        Ok(())
    }

    async fn clear(&self, namespace: &str) -> anyhow::Result<()> {
        self.mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(namespace);
        Ok(())
    }

    async fn entry_count(&self, namespace: &str) -> anyhow::Result<u64> {
        let mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        Ok(mem.get(namespace).map_or(0, |g| g.len() as u64))
    }
}

/// A bounded map that forgets the least recently used entries in bulk: inserts go to the
/// young generation; when it is full the old one is dropped and the young one becomes old.
/// A hit in the old generation moves the entry back to the young one. At most [`CAPACITY`]
/// entries, no per-entry bookkeeping.
#[derive(Default)]
struct Generations {
    young: HashMap<String, Vec<u8>>,
    old: HashMap<String, Vec<u8>>,
}

impl Generations {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let (k, v) = self.old.remove_entry(key)?;
        let out = v.clone();
        self.insert(k, v);
        Some(out)
    }

    fn insert(&mut self, key: String, value: Vec<u8>) {
        if self.young.len() >= CAPACITY / 2 && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    fn remove(&mut self, key: &str) {
        self.young.remove(key);
        self.old.remove(key);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_stay_bounded_and_keep_what_is_used() {
        let mut g = Generations::default();
        g.insert("hot".into(), b"h".to_vec());
        for i in 0..10 * CAPACITY {
            g.insert(format!("k{i}"), vec![0; 8]);
            // Used all along: never forgotten.
            assert_eq!(g.get("hot").as_deref(), Some(&b"h"[..]));
            assert!(g.len() <= CAPACITY, "{} entries", g.len());
        }
        assert!(g.get("k0").is_none(), "the coldest entry was forgotten");
        let last = format!("k{}", 10 * CAPACITY - 1);
        assert!(g.get(&last).is_some(), "the newest entry is kept");
        g.remove(&last);
        assert!(g.get(&last).is_none());
    }
}
