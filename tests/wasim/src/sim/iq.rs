//! IQ dispatch: which area answers a client `<iq>` (by `xmlns` and first
//! child), and the IQs whose answers are fixed — `props`, `privacy`,
//! `media_conn` (wasim as the only media host) and the empty result every
//! other IQ gets, so nothing in the client waits on a timeout.

use std::sync::Arc;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::Sim;

impl Sim {
    pub(super) fn handle_iq(self: &Arc<Self>, conn: u64, node: &Node) {
        let mut attrs = node.attrs();
        let id = attrs.optional_string("id").unwrap_or_default().to_string();
        let ty = attrs
            .optional_string("type")
            .unwrap_or_default()
            .to_string();
        let xmlns = attrs
            .optional_string("xmlns")
            .unwrap_or_default()
            .to_string();
        drop(attrs);

        if ty == "result" || ty == "error" {
            self.iq_response(conn, &id, node);
            return;
        }
        let first = node.children().and_then(|c| c.first());
        let first_tag = first.map(|c| c.tag.as_ref()).unwrap_or("");
        match (xmlns.as_str(), first_tag) {
            ("passive", "active") => self.go_active(conn, &id),
            ("encrypt", "list") | ("encrypt", "registration") | ("encrypt", "identity") => {
                self.store_prekeys(conn, &id, node)
            }
            ("encrypt", "key") => self.fetch_prekeys(conn, &id, node),
            ("encrypt", "count") => self.count_prekeys(conn, &id),
            (_, "props") => self.props(conn, &id),
            ("privacy", _) => self.privacy(conn, &id),
            ("encrypt", "digest") => self.key_digest(conn, &id),
            ("usync", _) => self.usync(conn, &id, node),
            ("w:g2", "create") => self.create_group(conn, &id, node),
            ("w:g2", "query") => self.query_group(conn, &id, node),
            ("w:g2", "participating") => self.participating_groups(conn, &id),
            ("w:m", "media_conn") => self.media_conn(conn, &id),
            ("w:sync:app:state", _) => self.app_state(conn, &id, node),
            ("md", "remove-companion-device") => self.remove_companion(conn, &id, node),
            ("md", "link_code_companion_reg") => self.pair_code_request(conn, &id, node),
            _ => {
                let st = self.lock();
                Self::send(&st, conn, Self::result(&id).build());
            }
        }
    }

    fn props(&self, conn: u64, id: &str) {
        let st = self.lock();
        let n = Self::result(id)
            .children([NodeBuilder::new("props")
                .attr("protocol", "2")
                .attr("hash", "wasim")
                .build()])
            .build();
        Self::send(&st, conn, n);
    }

    fn privacy(&self, conn: u64, id: &str) {
        let st = self.lock();
        let n = Self::result(id)
            .children([NodeBuilder::new("privacy").build()])
            .build();
        Self::send(&st, conn, n);
    }

    /// Names wasim's own address as the only media host, so uploads and
    /// downloads come to its `/mms/` and `/v/` routes.
    fn media_conn(&self, conn: u64, id: &str) {
        let host = self
            .media_host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let st = self.lock();
        let n = Self::result(id)
            .children([NodeBuilder::new("media_conn")
                .attr("auth", "wasim-media-auth")
                .attr("ttl", 3600u32)
                .attr("auth_ttl", 3600u32)
                .attr("max_buckets", 12u32)
                .children([NodeBuilder::new("host")
                    .attr("hostname", host)
                    .attr("type", "primary")
                    .build()])
                .build()])
            .build();
        Self::send(&st, conn, n);
    }
}
