//! One chat websocket: Noise handshake, then a loop that decrypts inbound
//! stanzas for the dispatcher and encrypts what the server sends back, stamps
//! each inbound frame in the connection log, closes the connection when its
//! client stays silent past the simulator's idle timeout, and records how it
//! ended.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use axum::extract::ws::{Message as WsMessage, WebSocket};
use tokio::sync::mpsc;
use wacore_binary::Node;

use crate::conns::EndReason;
use crate::noise::{Directional, FrameReader, Reply, Responder, frame};
use crate::sim::Sim;
use crate::state::{CONN_CHANNEL, Outbound};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn serve(sim: Arc<Sim>, mut ws: WebSocket) {
    let mut reader = FrameReader::default();
    let established = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&sim, &mut ws, &mut reader),
    )
    .await
    {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e:#}");
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Outbound>(CONN_CHANNEL);
    let (conn_id, activity) = sim.register_conn(tx);
    let mut read = Directional::new(established.reader);
    let mut write = Directional::new(established.writer);
    sim.on_client_payload(conn_id, &established.client_static, &established.payload);

    let mut shutdown = sim.shutdown_rx();
    let mut idle_timeout = sim.idle_timeout_rx();
    // The handshake's last frame counts as the client's latest.
    let mut last_frame = tokio::time::Instant::now();
    let end = loop {
        let idle = *idle_timeout.borrow_and_update();
        let deadline = idle.map(|d| last_frame + d);
        let idle_deadline = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = ws.recv() => {
                let data = match incoming {
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Close(_))) | None => break EndReason::ClientClosed,
                    Some(Err(_)) => break EndReason::SocketError,
                    Some(Ok(_)) => continue,
                };
                reader.feed(&data);
                let mut failed = false;
                loop {
                    match reader.next_frame() {
                        Ok(Some(f)) => {
                            last_frame = tokio::time::Instant::now();
                            activity.frame();
                            match decode(&mut read, f) {
                                Ok(node) => sim.handle_node(conn_id, node),
                                Err(e) => {
                                    tracing::warn!("conn {conn_id}: bad frame: {e:#}");
                                    failed = true;
                                    break;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("conn {conn_id}: framing: {e:#}");
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    break EndReason::ProtocolError;
                }
            }
            out = rx.recv() => {
                match out {
                    Some(Outbound::Node(node)) => {
                        if send_node(&mut ws, &mut write, &node).await.is_err() {
                            break EndReason::SocketError;
                        }
                    }
                    Some(Outbound::Close(node, reason)) => {
                        if let Some(node) = node {
                            let _ = send_node(&mut ws, &mut write, &node).await;
                        }
                        let _ = ws.send(WsMessage::Close(None)).await;
                        break reason;
                    }
                    // The simulator holds every connection's sender while it is registered.
                    None => break EndReason::ServerShutdown,
                }
            }
            _ = idle_deadline => {
                tracing::info!("conn {conn_id}: no frame for {idle:?}; closing");
                let _ = ws.send(WsMessage::Close(None)).await;
                break EndReason::IdleTimeout;
            }
            // A new setting: wait again with it.
            _ = idle_timeout.changed() => {}
            _ = shutdown.changed() => break EndReason::ServerShutdown,
        }
    };
    sim.unregister_conn(conn_id, end);
}

async fn handshake(
    sim: &Sim,
    ws: &mut WebSocket,
    reader: &mut FrameReader,
) -> Result<crate::noise::Established> {
    let hello = next_frame(ws, reader).await?;
    let (reply, server_hello) = Responder::respond(&hello, &sim.server_static, &sim.cert_chain)?;
    ws.send(WsMessage::Binary(frame(&server_hello).into()))
        .await
        .map_err(|e| anyhow!("send server hello: {e}"))?;
    match reply {
        Reply::Done(established) => Ok(*established),
        Reply::AwaitFinish(responder) => {
            let finish = next_frame(ws, reader).await?;
            responder.finish(&finish)
        }
    }
}

async fn next_frame(ws: &mut WebSocket, reader: &mut FrameReader) -> Result<Vec<u8>> {
    loop {
        if let Some(f) = reader.next_frame()? {
            return Ok(f);
        }
        match ws.recv().await {
            Some(Ok(WsMessage::Binary(b))) => reader.feed(&b),
            Some(Ok(WsMessage::Close(_))) | None => return Err(anyhow!("closed in handshake")),
            Some(Err(e)) => return Err(anyhow!("ws error: {e}")),
            Some(Ok(_)) => {}
        }
    }
}

fn decode(read: &mut Directional, ciphertext: Vec<u8>) -> Result<Node> {
    let plain = read.open(ciphertext)?;
    let unpacked = wacore_binary::util::unpack(&plain)?;
    let node = wacore_binary::marshal::unmarshal_ref(&unpacked)?.to_owned();
    Ok(node)
}

async fn send_node(ws: &mut WebSocket, write: &mut Directional, node: &Node) -> Result<()> {
    tracing::trace!("-> {}", wacore::xml::DisplayableNode(node));
    let plain = wacore_binary::marshal(node)?;
    let sealed = write.seal(&plain)?;
    ws.send(WsMessage::Binary(frame(&sealed).into()))
        .await
        .map_err(|e| anyhow!("ws send: {e}"))
}
