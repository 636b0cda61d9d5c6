//! What WhatsApp reports about a session's outbound messages (server acks, delivery and read
//! receipts), recorded several to a transaction.
//!
//! A busy session gets an ack and a receipt for every message it sends. Each recorded on its
//! own costs a fenced transaction (and on PostgreSQL a dozen round trips with the events it
//! writes), taken one after another by the session's event loop, so at a steady rate the loop
//! fell behind and every later event waited. The loop hands over the acks and receipts that
//! are already waiting, in arrival order, and they are applied here in one fenced transaction:
//! consecutive acks as one update, consecutive receipts of a kind as one, so an ack is still
//! applied before a receipt that came after it.

use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::types::presence::ReceiptType;

use super::{Inner, Slot};
use crate::storage::messages::queue;
use crate::storage::now_ms;

/// Acks and receipts applied in one transaction at most.
pub(super) const BATCH: usize = 256;

/// One report about outbound messages, by WhatsApp message id.
#[derive(Debug)]
pub(super) enum Report {
    /// The server took the message.
    Acked(String),
    /// The recipient's device got (or read) these messages.
    Receipt { ids: Vec<String>, read: bool },
}

impl Report {
    /// The report an event carries, if it is one (acks of other stanzas and receipts of
    /// our own devices are not).
    pub(super) fn of(ev: &Event) -> Option<Report> {
        match ev {
            Event::ServerAck(ack) if ack.class.as_deref().is_none_or(|c| c == "message") => {
                Some(Report::Acked(ack.id.clone()))
            }
            Event::Receipt(r) if !r.source.is_from_me => {
                let read = match r.r#type {
                    ReceiptType::Delivered | ReceiptType::Inactive => false,
                    ReceiptType::Read | ReceiptType::Played => true,
                    _ => return None,
                };
                let ids = r.message_ids.iter().map(|m| m.to_string()).collect();
                Some(Report::Receipt { ids, read })
            }
            _ => None,
        }
    }
}

/// Applies `reports` (in arrival order) in one fenced transaction that does not wait for
/// the disk: one lost to a machine crash leaves a status a step behind, and a message not
/// marked sent is sent again under the same id, which the recipient de-duplicates. Wakes the
/// outbound worker when a message was acked: the next one to its recipient may go now.
pub(super) async fn record(inner: &Inner, slot: &Slot, reports: Vec<Report>) {
    let acked = reports.iter().any(|r| matches!(r, Report::Acked(_)));
    let device = slot.device_id.clone();
    let recorded = slot
        .write_relaxed(&inner.db, move |c| {
            let now = now_ms();
            let mut reports = reports.into_iter().peekable();
            while let Some(first) = reports.next() {
                match first {
                    Report::Acked(id) => {
                        let mut ids = vec![id];
                        while let Some(Report::Acked(_)) = reports.peek() {
                            if let Some(Report::Acked(id)) = reports.next() {
                                ids.push(id);
                            }
                        }
                        queue::mark_acked_all(c, &device, &ids, now)?;
                    }
                    Report::Receipt { mut ids, read } => {
                        while let Some(Report::Receipt { read: r, .. }) = reports.peek()
                            && *r == read
                        {
                            if let Some(Report::Receipt { ids: more, .. }) = reports.next() {
                                ids.extend(more);
                            }
                        }
                        queue::mark_receipt(c, &device, &ids, read, now)?;
                    }
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(device = %slot.device_id, error = %e, "cannot record acks and receipts");
    }
    if acked {
        slot.wake.notify_one();
    }
}
