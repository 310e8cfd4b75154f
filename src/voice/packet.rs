//! The voice packet: a 32-byte clear header (authenticated as associated data), then the
//! AEAD-sealed payload and its 16-byte tag. The same bytes travel in UDP datagrams and, as
//! the TCP fallback, in binary WebSocket frames. `docs/voice.md` is the specification.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::Zeroizing;

pub const HEADER_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// Largest opaque payload (an Opus frame is far smaller).
pub const MAX_PAYLOAD: usize = 1024;
pub const MAX_PACKET: usize = HEADER_LEN + MAX_PAYLOAD + TAG_LEN;

pub const KIND_VOICE: u8 = 1;
pub const KIND_PING: u8 = 2;
pub const KIND_PONG: u8 = 3;
/// Server → client, to an address not yet validated: answer with the same payload.
pub const KIND_CHALLENGE: u8 = 4;
/// Client → server: the answer to a challenge, from the address it was sent to.
pub const KIND_CHALLENGE_RESPONSE: u8 = 5;

/// Direction byte of the nonce: keeps the client's and the server's counters apart under
/// one key.
pub const FROM_CLIENT: u8 = 0;
pub const FROM_SERVER: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherKind {
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl CipherKind {
    pub fn id(self) -> u8 {
        match self {
            CipherKind::Aes256Gcm => 1,
            CipherKind::ChaCha20Poly1305 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CipherKind::Aes256Gcm => "aes-256-gcm",
            CipherKind::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    pub fn from_name(name: &str) -> Option<CipherKind> {
        match name {
            "aes-256-gcm" => Some(CipherKind::Aes256Gcm),
            "chacha20-poly1305" => Some(CipherKind::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// The clear header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub cipher: u8,
    /// Whose key seals the packet: the sender's (client → server) or the recipient's
    /// (server → client).
    pub participant: u32,
    pub epoch: u32,
    /// Strictly increasing per key and direction; the nonce is built from it.
    pub counter: u64,
    /// Who spoke (client → server: the sender itself).
    pub speaker: u32,
    /// The speaker's own counter for this frame (for the receiver's jitter buffer).
    pub speaker_seq: u64,
}

impl Header {
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.kind;
        out[1] = self.cipher;
        out[2] = 0;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.participant.to_be_bytes());
        out[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        out[12..20].copy_from_slice(&self.counter.to_be_bytes());
        out[20..24].copy_from_slice(&self.speaker.to_be_bytes());
        out[24..32].copy_from_slice(&self.speaker_seq.to_be_bytes());
    }

    /// `None` for anything shorter than a header plus a tag, or with reserved bits set.
    pub fn read(packet: &[u8]) -> Option<Header> {
        if packet.len() < HEADER_LEN + TAG_LEN || packet[2] != 0 || packet[3] != 0 {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([packet[i], packet[i + 1], packet[i + 2], packet[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&packet[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Some(Header {
            kind: packet[0],
            cipher: packet[1],
            participant: u32_at(4),
            epoch: u32_at(8),
            counter: u64_at(12),
            speaker: u32_at(20),
            speaker_seq: u64_at(24),
        })
    }
}

pub fn nonce(direction: u8, counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = direction;
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// One participant's key for one epoch. The raw bytes are kept (zeroized on drop) only to
/// hand them to the participant; the cipher state zeroizes itself too.
pub struct Key {
    pub epoch: u32,
    pub kind: CipherKind,
    pub bytes: Zeroizing<[u8; 32]>,
    cipher: CipherState,
}

enum CipherState {
    Aes(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

impl Key {
    pub fn new(kind: CipherKind, epoch: u32, bytes: [u8; 32]) -> Key {
        let bytes = Zeroizing::new(bytes);
        let cipher = match kind {
            CipherKind::Aes256Gcm => CipherState::Aes(Box::new(Aes256Gcm::new((&*bytes).into()))),
            CipherKind::ChaCha20Poly1305 => {
                CipherState::ChaCha(Box::new(ChaCha20Poly1305::new((&*bytes).into())))
            }
        };
        Key {
            epoch,
            kind,
            bytes,
            cipher,
        }
    }

    /// A fresh random key.
    pub fn generate(kind: CipherKind, epoch: u32) -> Key {
        let mut bytes = [0u8; 32];
        openssl::rand::rand_bytes(&mut bytes).unwrap_or_else(|_| {
            use rand::RngCore;
            rand::rngs::OsRng.fill_bytes(&mut bytes)
        });
        let key = Key::new(kind, epoch, bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        key
    }

    /// Seals `buf[HEADER_LEN..]` in place (the header is written first and authenticated)
    /// and appends the tag.
    pub fn seal(&self, direction: u8, header: &Header, buf: &mut Vec<u8>) -> bool {
        header.write(&mut buf[..HEADER_LEN]);
        let n = nonce(direction, header.counter);
        let (head, body) = buf.split_at_mut(HEADER_LEN);
        let tag = match &self.cipher {
            CipherState::Aes(c) => c.encrypt_in_place_detached((&n).into(), head, body),
            CipherState::ChaCha(c) => c.encrypt_in_place_detached((&n).into(), head, body),
        };
        match tag {
            Ok(t) => {
                buf.extend_from_slice(&t);
                true
            }
            Err(_) => false,
        }
    }

    /// Opens a packet in place: on success `packet[HEADER_LEN..len - TAG_LEN]` is the
    /// plaintext. False if it fails authentication.
    pub fn open(&self, direction: u8, header: &Header, packet: &mut [u8]) -> bool {
        let n = nonce(direction, header.counter);
        let len = packet.len();
        if len < HEADER_LEN + TAG_LEN {
            return false;
        }
        let (head, rest) = packet.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(len - HEADER_LEN - TAG_LEN);
        let tag: &[u8] = tag;
        match &self.cipher {
            CipherState::Aes(c) => c
                .decrypt_in_place_detached((&n).into(), head, body, tag.into())
                .is_ok(),
            CipherState::ChaCha(c) => c
                .decrypt_in_place_detached((&n).into(), head, body, tag.into())
                .is_ok(),
        }
    }
}

/// Rejects repeated and very old counters: a 1024-packet sliding window above the highest
/// counter seen.
#[derive(Default)]
pub struct ReplayWindow {
    highest: u64,
    seen: [u64; 16],
    any: bool,
}

pub const REPLAY_WINDOW: u64 = 1024;

impl ReplayWindow {
    /// Whether the counter may be accepted (does not record it).
    pub fn check(&self, counter: u64) -> bool {
        if !self.any || counter > self.highest {
            return true;
        }
        let age = self.highest - counter;
        if age >= REPLAY_WINDOW {
            return false;
        }
        let bit = counter % REPLAY_WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) == 0
    }

    /// Records an accepted counter (after authentication succeeded).
    pub fn record(&mut self, counter: u64) {
        if !self.any {
            self.any = true;
            self.highest = counter;
            self.seen = [0; 16];
        } else if counter > self.highest {
            let advance = counter - self.highest;
            if advance >= REPLAY_WINDOW {
                self.seen = [0; 16];
            } else {
                for c in self.highest + 1..=counter {
                    let bit = c % REPLAY_WINDOW;
                    self.seen[(bit / 64) as usize] &= !(1 << (bit % 64));
                }
            }
            self.highest = counter;
        }
        let bit = counter % REPLAY_WINDOW;
        self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(counter: u64) -> Header {
        Header {
            kind: KIND_VOICE,
            cipher: 1,
            participant: 7,
            epoch: 3,
            counter,
            speaker: 7,
            speaker_seq: counter,
        }
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        for kind in [CipherKind::Aes256Gcm, CipherKind::ChaCha20Poly1305] {
            let key = Key::generate(kind, 3);
            let h = sample(42);
            let mut buf = vec![0u8; HEADER_LEN];
            buf.extend_from_slice(b"opus frame");
            assert!(key.seal(FROM_CLIENT, &h, &mut buf));
            let mut ok = buf.clone();
            assert_eq!(Header::read(&ok), Some(h));
            assert!(key.open(FROM_CLIENT, &h, &mut ok));
            assert_eq!(&ok[HEADER_LEN..ok.len() - TAG_LEN], b"opus frame");
            // Wrong direction, flipped payload bit, changed header: all rejected.
            assert!(!key.open(FROM_SERVER, &h, &mut buf.clone()));
            let mut t = buf.clone();
            t[HEADER_LEN] ^= 1;
            assert!(!key.open(FROM_CLIENT, &h, &mut t));
            let mut t = buf.clone();
            t[31] ^= 1;
            let h2 = Header::read(&t).unwrap();
            assert!(!key.open(FROM_CLIENT, &h2, &mut t));
            // Another key cannot open it.
            assert!(!Key::generate(kind, 3).open(FROM_CLIENT, &h, &mut buf.clone()));
        }
    }

    #[test]
    fn replay_window_rejects_duplicates_and_old_counters() {
        let mut w = ReplayWindow::default();
        for c in [5, 7, 6, 100] {
            assert!(w.check(c));
            w.record(c);
        }
        assert!(!w.check(6) && !w.check(100) && !w.check(5));
        assert!(w.check(99) && w.check(101));
        w.record(2000);
        assert!(!w.check(100), "older than the window");
        assert!(w.check(1990));
        w.record(1990);
        assert!(!w.check(1990));
    }
}
