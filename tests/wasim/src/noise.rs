//! Server side of WhatsApp's Noise transport: connection header, 3-byte length
//! framing, the XX (and XX-fallback) responder handshake, and per-frame AES-GCM.

use anyhow::{Context, Result, anyhow, bail};
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::buffa::{self, Message as _};
use waproto::whatsapp as wa;

/// Reassembles length-prefixed frames out of websocket messages; the first
/// bytes of a connection carry the `WA` header (optionally after an `ED`
/// edge-routing pre-intro), which is stripped once.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    header_done: bool,
}

/// Frames above this size are refused: the client's own limit is 16 MiB.
const MAX_FRAME: usize = 1 << 24;

impl FrameReader {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        if !self.header_done {
            if self.buf.starts_with(b"ED") {
                if self.buf.len() < 7 {
                    return Ok(None);
                }
                let len = u32::from_be_bytes([0, self.buf[4], self.buf[5], self.buf[6]]) as usize;
                if self.buf.len() < 7 + len {
                    return Ok(None);
                }
                self.buf.drain(..7 + len);
            }
            if self.buf.len() < 4 {
                return Ok(None);
            }
            if self.buf[..2] != WA_CONN_HEADER[..2] {
                bail!("missing WA connection header");
            }
            self.buf.drain(..4);
            self.header_done = true;
        }
        if self.buf.len() < 3 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if len >= MAX_FRAME {
            bail!("frame too large: {len}");
        }
        if self.buf.len() < 3 + len {
            return Ok(None);
        }
        let frame = self.buf[3..3 + len].to_vec();
        self.buf.drain(..3 + len);
        Ok(Some(frame))
    }
}

/// Prefixes `payload` with its 3-byte big-endian length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    let len = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(payload);
    out
}

/// Outcome of answering a client hello.
pub enum Reply {
    /// IK: the handshake is complete.
    Done(Box<Established>),
    /// XX or XX-fallback: the client finish is still to come.
    AwaitFinish(Box<Responder>),
}

fn server_hello(ephemeral: Vec<u8>, r#static: Option<Vec<u8>>, payload: Vec<u8>) -> Vec<u8> {
    wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral),
            r#static,
            payload: Some(payload),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// IK responder (`<- s` known; `-> e, es, s, ss`; `<- e, ee, se`). Fails if
/// the client encrypted to another static key.
fn ik(
    client_eph: &[u8; 32],
    enc_static: &[u8],
    enc_payload: &[u8],
    server_static: &KeyPair,
    cert_chain: &[u8],
) -> Result<(Reply, Vec<u8>)> {
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
    noise.authenticate(server_static.public_key.public_key_bytes());
    noise.authenticate(client_eph);
    noise.mix_shared_secret(server_static.private_key.serialize(), client_eph)?;
    let client_static: [u8; 32] = noise
        .decrypt(enc_static)?
        .try_into()
        .map_err(|_| anyhow!("bad static length"))?;
    noise.mix_shared_secret(server_static.private_key.serialize(), &client_static)?;
    let payload_bytes = noise.decrypt(enc_payload)?;
    let payload =
        wa::ClientPayload::decode_from_slice(&payload_bytes).context("decode ClientPayload")?;
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let eph_pub = ephemeral.public_key.public_key_bytes().to_vec();
    noise.authenticate(&eph_pub);
    noise.mix_shared_secret(ephemeral.private_key.serialize(), client_eph)?;
    noise.mix_shared_secret(ephemeral.private_key.serialize(), &client_static)?;
    let enc_cert = noise.encrypt(cert_chain)?;
    let reply = server_hello(eph_pub, None, enc_cert);
    let (c2s, s2c) = noise.finish()?;
    let est = Established {
        reader: c2s,
        writer: s2c,
        client_static,
        payload,
    };
    Ok((Reply::Done(Box::new(est)), reply))
}

/// Responder state between the server hello and the client finish.
pub struct Responder {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
}

/// What a completed handshake yields.
pub struct Established {
    pub reader: NoiseCipher,
    pub writer: NoiseCipher,
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
}

impl Responder {
    /// Answers a client hello. A returning client that cached this server's
    /// static key sends an IK hello (its static key and login payload
    /// already inside): that completes here, in one round trip. An IK hello
    /// made for another static key (a restarted wasim) is answered as
    /// XX-fallback, which the client follows; a plain hello gets XX.
    pub fn respond(
        client_hello_frame: &[u8],
        server_static: &KeyPair,
        cert_chain: &[u8],
    ) -> Result<(Reply, Vec<u8>)> {
        let msg = wa::HandshakeMessage::decode_from_slice(client_hello_frame)
            .context("decode client hello")?;
        let hello = msg
            .client_hello
            .into_option()
            .ok_or_else(|| anyhow!("no client hello"))?;
        let client_eph: [u8; 32] = hello
            .ephemeral
            .ok_or_else(|| anyhow!("client hello without ephemeral"))?
            .try_into()
            .map_err(|_| anyhow!("bad ephemeral length"))?;
        let pattern = match (&hello.r#static, &hello.payload) {
            (Some(s), Some(p)) => {
                if let Ok(done) = ik(&client_eph, s, p, server_static, cert_chain) {
                    return Ok(done);
                }
                NOISE_PATTERN_XXFALLBACK
            }
            (Some(_), None) => NOISE_PATTERN_XXFALLBACK,
            _ => NOISE_PATTERN_XX,
        };
        let mut noise = NoiseHandshake::new(pattern, &WA_CONN_HEADER)?;
        noise.authenticate(&client_eph);
        let ephemeral = KeyPair::generate(&mut rand::rng());
        let eph_pub = ephemeral.public_key.public_key_bytes().to_vec();
        noise.authenticate(&eph_pub);
        noise.mix_shared_secret(ephemeral.private_key.serialize(), &client_eph)?;
        let enc_static = noise.encrypt(server_static.public_key.public_key_bytes())?;
        noise.mix_shared_secret(server_static.private_key.serialize(), &client_eph)?;
        let enc_cert = noise.encrypt(cert_chain)?;
        let reply = server_hello(eph_pub, Some(enc_static), enc_cert);
        Ok((
            Reply::AwaitFinish(Box::new(Self { noise, ephemeral })),
            reply,
        ))
    }

    /// Reads the client finish: the client's static key and its payload.
    pub fn finish(mut self, client_finish_frame: &[u8]) -> Result<Established> {
        let msg = wa::HandshakeMessage::decode_from_slice(client_finish_frame)
            .context("decode client finish")?;
        let fin = msg
            .client_finish
            .into_option()
            .ok_or_else(|| anyhow!("no client finish"))?;
        let static_ct = fin
            .r#static
            .ok_or_else(|| anyhow!("finish without static"))?;
        let client_static: [u8; 32] = self
            .noise
            .decrypt(&static_ct)?
            .try_into()
            .map_err(|_| anyhow!("bad static length"))?;
        self.noise
            .mix_shared_secret(self.ephemeral.private_key.serialize(), &client_static)?;
        let payload_ct = fin
            .payload
            .ok_or_else(|| anyhow!("finish without payload"))?;
        let payload_bytes = self.noise.decrypt(&payload_ct)?;
        let payload =
            wa::ClientPayload::decode_from_slice(&payload_bytes).context("decode ClientPayload")?;
        // The initiator's first key encrypts client→server traffic.
        let (c2s, s2c) = self.noise.finish()?;
        Ok(Established {
            reader: c2s,
            writer: s2c,
            client_static,
            payload,
        })
    }
}

/// Counter-nonce AES-GCM for one direction of an established connection.
pub struct Directional {
    cipher: NoiseCipher,
    counter: u32,
}

impl Directional {
    pub fn new(cipher: NoiseCipher) -> Self {
        Self { cipher, counter: 0 }
    }

    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let out = self.cipher.encrypt_with_counter(self.counter, plaintext)?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| anyhow!("counter exhausted"))?;
        Ok(out)
    }

    pub fn open(&mut self, mut ciphertext: Vec<u8>) -> Result<Vec<u8>> {
        self.cipher
            .decrypt_in_place_with_counter(self.counter, &mut ciphertext)?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| anyhow!("counter exhausted"))?;
        Ok(ciphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wacore_noise::XxHandshakeState;

    #[test]
    fn frames_split_across_reads_and_header_stripped() {
        let mut r = FrameReader::default();
        let mut wire = b"ED\x00\x01\x00\x00\x02ab".to_vec();
        wire.extend_from_slice(&WA_CONN_HEADER);
        wire.extend_from_slice(&frame(b"hello"));
        wire.extend_from_slice(&frame(b"world!"));
        let (first, rest) = wire.split_at(9);
        r.feed(first);
        assert_eq!(r.next_frame().unwrap(), None);
        r.feed(rest);
        assert_eq!(r.next_frame().unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(r.next_frame().unwrap().as_deref(), Some(&b"world!"[..]));
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn rejects_a_stream_without_the_wa_header() {
        let mut r = FrameReader::default();
        r.feed(b"GET / HTTP/1.1\r\n");
        assert!(r.next_frame().is_err());
    }

    fn login_payload() -> Vec<u8> {
        wa::ClientPayload {
            username: Some(15550009999),
            device: Some(1),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn assert_keys_agree(
        c_write: NoiseCipher,
        c_read: NoiseCipher,
        s_read: NoiseCipher,
        s_write: NoiseCipher,
    ) {
        let (mut cw, mut cr) = (Directional::new(c_write), Directional::new(c_read));
        let (mut sr, mut sw) = (Directional::new(s_read), Directional::new(s_write));
        assert_eq!(sr.open(cw.seal(b"ping").unwrap()).unwrap(), b"ping");
        assert_eq!(cr.open(sw.seal(b"pong").unwrap()).unwrap(), b"pong");
    }

    /// A returning client's IK hello completes in one round trip.
    #[test]
    fn ik_handshake_with_the_client_initiator() {
        use wacore_noise::{IkHandshakeState, IkServerHelloOutcome};
        let server_static = KeyPair::generate(&mut rand::rng());
        let pub32: [u8; 32] = server_static
            .public_key
            .public_key_bytes()
            .try_into()
            .unwrap();
        let chain = wacore_noise::test_util::build_cert_chain_bytes(&pub32);
        let client_static = KeyPair::generate(&mut rand::rng());
        let mut client =
            IkHandshakeState::new(client_static, pub32, login_payload(), &WA_CONN_HEADER).unwrap();
        let hello = client.build_client_hello().unwrap();
        let (reply, server_hello) = Responder::respond(&hello, &server_static, &chain).unwrap();
        let Reply::Done(est) = reply else {
            panic!("IK must complete without a client finish")
        };
        assert_eq!(est.payload.username, Some(15550009999));
        let IkServerHelloOutcome::Continue(out) = client.read_server_hello(&server_hello).unwrap()
        else {
            panic!("client must accept the IK reply")
        };
        let est = *est;
        assert_keys_agree(out.write_cipher, out.read_cipher, est.reader, est.writer);
    }

    /// An IK hello for another server key (a restarted wasim) falls back to XX.
    #[test]
    fn stale_ik_falls_back_to_xx() {
        use wacore_noise::{IkHandshakeState, IkServerHelloOutcome, XxFallbackHandshakeState};
        let server_static = KeyPair::generate(&mut rand::rng());
        let pub32: [u8; 32] = server_static
            .public_key
            .public_key_bytes()
            .try_into()
            .unwrap();
        let chain = wacore_noise::test_util::build_cert_chain_bytes(&pub32);
        let stale = [7u8; 32];
        let mut client = IkHandshakeState::new(
            KeyPair::generate(&mut rand::rng()),
            stale,
            login_payload(),
            &WA_CONN_HEADER,
        )
        .unwrap();
        let hello = client.build_client_hello().unwrap();
        let (reply, server_hello) = Responder::respond(&hello, &server_static, &chain).unwrap();
        let Reply::AwaitFinish(responder) = reply else {
            panic!("a stale IK hello must fall back")
        };
        let IkServerHelloOutcome::Fallback(inputs) =
            client.read_server_hello(&server_hello).unwrap()
        else {
            panic!("client must take the fallback")
        };
        let mut fb = XxFallbackHandshakeState::from_ik_failure(*inputs, &WA_CONN_HEADER).unwrap();
        let finish = fb.build_client_finish().unwrap();
        let est = responder.finish(&finish).unwrap();
        let out = fb.finish().unwrap();
        assert_keys_agree(out.write_cipher, out.read_cipher, est.reader, est.writer);
    }

    /// The client's own XX initiator (wacore-noise) completes a handshake
    /// against the responder, and both ends then agree on the transport keys.
    #[test]
    fn xx_handshake_with_the_client_initiator() {
        let server_static = KeyPair::generate(&mut rand::rng());
        let pub32: [u8; 32] = server_static
            .public_key
            .public_key_bytes()
            .try_into()
            .unwrap();
        let chain = wacore_noise::test_util::build_cert_chain_bytes(&pub32);
        let payload = wa::ClientPayload {
            username: Some(15550001234),
            device: Some(3),
            ..Default::default()
        }
        .encode_to_vec();
        let client_static = KeyPair::generate(&mut rand::rng());
        let mut client =
            XxHandshakeState::new(client_static.clone(), payload, &WA_CONN_HEADER).unwrap();
        let hello = client.build_client_hello().unwrap();
        let (reply, server_hello) = Responder::respond(&hello, &server_static, &chain).unwrap();
        let Reply::AwaitFinish(responder) = reply else {
            panic!("an XX hello must wait for the client finish")
        };
        let finish = client
            .read_server_hello_and_build_client_finish(&server_hello)
            .unwrap();
        let est = responder.finish(&finish).unwrap();
        assert_eq!(
            &est.client_static[..],
            client_static.public_key.public_key_bytes()
        );
        assert_eq!(est.payload.username, Some(15550001234));
        let out = client.finish().unwrap();

        let mut c_write = Directional::new(out.write_cipher);
        let mut s_read = Directional::new(est.reader);
        let mut s_write = Directional::new(est.writer);
        let mut c_read = Directional::new(out.read_cipher);
        for msg in [&b"one"[..], b"two"] {
            assert_eq!(s_read.open(c_write.seal(msg).unwrap()).unwrap(), msg);
            assert_eq!(c_read.open(s_write.seal(msg).unwrap()).unwrap(), msg);
        }
    }
}
