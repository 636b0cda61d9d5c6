//! The self-fence: a node that cannot prove it still holds a session's lease stops talking to
//! WhatsApp for it before anyone else may start.
//!
//! Every WhatsApp connection of a session goes through a [`Gate`]. The gate lets a frame out,
//! and a connection open, only while the node's [`LeaseClock`] says its leases are valid (the
//! last successful renewal plus the TTL minus a margin, on this process's monotonic clock)
//! and the gate is not cut. So a process paused past its lease (SIGSTOP, a long GC-like
//! stall, a VM freeze) sends nothing when it resumes, even before any of its tasks notices:
//! the check runs on the send path itself. Writes to the database are fenced separately by
//! the lease epoch (`storage::cluster::check_fence`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};

/// Until when this node's leases are valid, by its own monotonic clock.
#[derive(Debug)]
pub struct LeaseClock {
    origin: Instant,
    /// Milliseconds since `origin`; 0 = never renewed (nothing is valid).
    valid_until_ms: AtomicU64,
}

impl LeaseClock {
    pub fn new() -> Self {
        LeaseClock {
            origin: Instant::now(),
            valid_until_ms: AtomicU64::new(0),
        }
    }

    /// A renewal sent at `sent` succeeded: the leases hold until `sent + ttl - margin`.
    pub fn renewed(&self, sent: Instant, valid_for: Duration) {
        let until = (sent.saturating_duration_since(self.origin) + valid_for).as_millis() as u64;
        self.valid_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Nothing is valid any more (the node lost its identity or stops).
    pub fn invalidate(&self) {
        self.valid_until_ms.store(0, Ordering::Release);
    }

    pub fn valid(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) < self.valid_until_ms.load(Ordering::Acquire)
    }

    /// Time left before the leases must be treated as lost.
    pub fn remaining(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(
            self.valid_until_ms
                .load(Ordering::Acquire)
                .saturating_sub(now),
        )
    }
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self::new()
    }
}

/// One session's gate to WhatsApp: open while the node's leases are valid and the session
/// was not cut.
pub(crate) struct Gate {
    clock: Arc<LeaseClock>,
    cut: AtomicBool,
    current: Mutex<Option<Arc<dyn Transport>>>,
}

impl Gate {
    pub fn new(clock: Arc<LeaseClock>) -> Arc<Self> {
        Arc::new(Gate {
            clock,
            cut: AtomicBool::new(false),
            current: Mutex::new(None),
        })
    }

    pub fn open(&self) -> bool {
        !self.cut.load(Ordering::Acquire) && self.clock.valid()
    }

    /// Closes the gate for good and drops the open connection now, without the client's
    /// cooperation (it flushes nothing: its lease may be gone).
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = current {
            t.disconnect().await;
        }
    }

    /// The session's transport factory: connections through this gate.
    pub fn factory(self: &Arc<Self>, inner: Arc<dyn TransportFactory>) -> GatedFactory {
        GatedFactory {
            gate: self.clone(),
            inner,
        }
    }
}

pub(crate) struct GatedFactory {
    gate: Arc<Gate>,
    inner: Arc<dyn TransportFactory>,
}

#[async_trait::async_trait]
impl TransportFactory for GatedFactory {
    async fn create_transport(
        &self,
    ) -> std::result::Result<
        (
            Arc<dyn Transport>,
            whatsapp_rust::async_channel::Receiver<TransportEvent>,
        ),
        whatsapp_rust::anyhow::Error,
    > {
        if !self.gate.open() {
            return Err(whatsapp_rust::anyhow::anyhow!(
                "this node does not hold the session's lease"
            ));
        }
        let (transport, events) = self.inner.create_transport().await?;
        let gated: Arc<dyn Transport> = Arc::new(GatedTransport {
            gate: self.gate.clone(),
            inner: transport,
        });
        *self.gate.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(gated.clone());
        // Cut while connecting: drop it at once.
        if !self.gate.open() {
            gated.disconnect().await;
            return Err(whatsapp_rust::anyhow::anyhow!(
                "this node does not hold the session's lease"
            ));
        }
        Ok((gated, events))
    }
}

struct GatedTransport {
    gate: Arc<Gate>,
    inner: Arc<dyn Transport>,
}

#[async_trait::async_trait]
impl Transport for GatedTransport {
    async fn send(&self, data: Bytes) -> std::result::Result<(), whatsapp_rust::anyhow::Error> {
        if !self.gate.open() {
            self.inner.disconnect().await;
            return Err(whatsapp_rust::anyhow::anyhow!(
                "this node does not hold the session's lease"
            ));
        }
        self.inner.send(data).await
    }

    async fn disconnect(&self) {
        self.inner.disconnect().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_valid_only_within_its_last_renewal() {
        let clock = LeaseClock::new();
        assert!(!clock.valid(), "never renewed");
        clock.renewed(Instant::now(), Duration::from_millis(200));
        assert!(clock.valid());
        std::thread::sleep(Duration::from_millis(250));
        assert!(!clock.valid(), "past the renewal's validity");
        // An older renewal landing late never shortens a newer one.
        clock.renewed(Instant::now(), Duration::from_secs(5));
        clock.renewed(
            Instant::now() - Duration::from_secs(10),
            Duration::from_secs(1),
        );
        assert!(clock.valid());
        clock.invalidate();
        assert!(!clock.valid());
    }
}
