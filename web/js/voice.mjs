// Voice in the browser (docs/voice.md): a room's voice channel carried as binary frames on
// the event WebSocket — the protocol's TCP fallback, since a page has no UDP. Microphone →
// WebCodecs Opus → AES-256-GCM through WebCrypto (the 32 header bytes as associated data) →
// one frame per packet. Packets in → opened under our key → one Opus decoder per speaker →
// Web Audio, scheduled a little ahead so network jitter does not click.
import { api } from "./api.mjs";

const KIND_VOICE = 1;
const KIND_PING = 2;
const KIND_PONG = 3;
const KIND_CHALLENGE = 4;
const KIND_RESPONSE = 5;
const AES_256_GCM = 1;
const HEADER = 32;
const TAG = 16;
const MAX_PAYLOAD = 1024;
/** Replay window: a counter this far below the highest seen is refused (as the server does). */
const WINDOW = 1024n;
/** Playback starts this far behind the first frame of a burst (seconds): the jitter buffer. */
const PLAYOUT_DELAY = 0.08;
/** A speaker further behind than this is pulled back to PLAYOUT_DELAY (drops audio, not sync). */
const MAX_LAG = 0.4;
/** Decoders kept at once; the speaker heard longest ago loses theirs first. */
const MAX_SPEAKERS = 16;
/** After a decoder fails (not Opus: a test tool's frames) it is not rebuilt for this long (ms). */
const DECODER_RETRY_MS = 1000;

/** Microphone frames per Opus frame through the worklet path: 20 ms at 48 kHz. */
const FRAME = 960;

/** Whether this browser can send voice: a WebCodecs encoder, a microphone, and a way to
 * get its samples (MediaStreamTrackProcessor, else an AudioWorklet). */
export function canSpeak() {
  return typeof AudioEncoder === "function" && Boolean(navigator.mediaDevices?.getUserMedia)
    && (typeof MediaStreamTrackProcessor === "function" || typeof AudioWorkletNode === "function");
}

function canDecode() {
  return typeof AudioDecoder === "function";
}

async function importKey(hex) {
  const bytes = new Uint8Array((hex.match(/[0-9a-f]{2}/gi) || []).map((b) => parseInt(b, 16)));
  return crypto.subtle.importKey("raw", bytes, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** direction (0 client → server, 1 server → client) ‖ 0 0 0 ‖ counter, big-endian. */
function nonce(direction, counter) {
  const n = new Uint8Array(12);
  n[0] = direction;
  new DataView(n.buffer).setBigUint64(4, counter);
  return n;
}

/** One key epoch: the key and what has been opened under it (for replays). */
class EpochKey {
  constructor(key) {
    this.key = key;
    this.highest = 0n;
    this.seen = new Set();
  }

  fresh(counter) {
    return counter + WINDOW > this.highest && !this.seen.has(counter);
  }

  record(counter) {
    this.seen.add(counter);
    if (counter > this.highest) this.highest = counter;
    if (this.seen.size > 2 * Number(WINDOW)) {
      for (const c of this.seen) if (c + WINDOW <= this.highest) this.seen.delete(c);
    }
  }
}

/**
 * One participation in one room's voice channel. `events` is the page's event stream
 * (its binary frames come to receive()); onChange() redraws the controls.
 */
export class VoiceCall {
  constructor(roomId, events, onChange) {
    this.roomId = roomId;
    this.events = events;
    this.onChange = onChange;
    this.keys = new Map();
    this.earlyKeys = [];
    this.counter = 0n;
    this.seq = 0n;
    this.muted = false;
    this.deafened = false;
    this.left = false;
    this.talking = new Set();
    this.participants = new Map();
    this.speakers = new Map();
    this.stats = { sent: 0, received: 0, played: 0, undecodable: 0, dropped: 0, rttMs: null };
    this.error = null;
  }

  /** Called from the click that joins, so the page may start audio. */
  async join() {
    this.audio = new AudioContext({ sampleRate: 48000 });
    const speak = canSpeak();
    const answer = await api.joinVoice(this.roomId, !speak);
    await this.useJoin(answer);
    this.pinger = setInterval(() => this.ping(), 5000);
    if (this.canTalk) {
      try {
        await this.startMicrophone();
      } catch (e) {
        this.canTalk = false;
        this.error = `No microphone: ${e.message}`;
      }
    } else if (!speak) {
      this.error = "This browser can listen but not speak (no WebCodecs audio encoder).";
    }
    this.onChange();
  }

  async useJoin(answer) {
    const key = new EpochKey(await importKey(answer.key));
    this.participantId = answer.participantId;
    this.epoch = answer.keyEpoch;
    this.keys = new Map([[answer.keyEpoch, key]]);
    this.counter = 0n;
    // A renewal can overtake the join's answer (the event stream is faster than the POST's
    // reply): those that came before it are used now (useKey skips others' and older ones).
    const early = this.earlyKeys;
    this.earlyKeys = [];
    for (const k of early) await this.useKey(k);
    this.canTalk = answer.canTalk && canSpeak();
    this.participants = new Map((answer.participants || []).map((p) => [p.participantId, p.userId]));
    // The server learns where to send from our first authenticated packet.
    await this.ping();
  }

  /** The server forgot the channel (its actor restarted): join again, same microphone. */
  async rejoin() {
    if (this.left) return;
    await this.useJoin(await api.joinVoice(this.roomId, !this.canTalk));
    this.onChange();
  }

  async startMicrophone() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    this.encoder = new AudioEncoder({
      output: (chunk) => this.sendFrame(chunk),
      error: (e) => {
        this.error = `Microphone encoding stopped: ${e.message}`;
        this.onChange();
      },
    });
    if (typeof MediaStreamTrackProcessor === "function") this.captureTrack();
    else await this.captureWorklet();
  }

  /** Encodes one block of microphone audio (configuring the encoder on the first). */
  encode(data) {
    if (this.encoder.state === "unconfigured") {
      this.encoder.configure({
        codec: "opus", sampleRate: data.sampleRate, numberOfChannels: data.numberOfChannels, bitrate: 32000,
      });
    }
    if (!this.muted && this.encoder.state === "configured") this.encoder.encode(data);
    data.close();
  }

  /** Chromium: the track's AudioData as they come. */
  captureTrack() {
    this.capture = "track-processor";
    const [track] = this.stream.getAudioTracks();
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    (async () => {
      for (;;) {
        const { value: data, done } = await reader.read();
        if (done || this.left) {
          if (data) data.close();
          break;
        }
        this.encode(data);
      }
    })();
  }

  /** Elsewhere: samples from an AudioWorklet, gathered into 20 ms AudioData frames. */
  async captureWorklet() {
    this.capture = "worklet";
    await this.audio.audioWorklet.addModule("/js/capture-worklet.js");
    const source = this.audio.createMediaStreamSource(this.stream);
    const tap = new AudioWorkletNode(this.audio, "confab-capture");
    // A worklet runs only while the graph pulls it: to the speakers, at zero volume.
    const silent = this.audio.createGain();
    silent.gain.value = 0;
    source.connect(tap).connect(silent).connect(this.audio.destination);
    const pending = new Float32Array(FRAME);
    let filled = 0;
    let timestamp = 0;
    tap.port.onmessage = (e) => {
      if (this.left) return;
      const block = e.data;
      for (let at = 0; at < block.length;) {
        const n = Math.min(FRAME - filled, block.length - at);
        pending.set(block.subarray(at, at + n), filled);
        filled += n;
        at += n;
        if (filled === FRAME) {
          this.encode(new AudioData({
            format: "f32-planar", sampleRate: this.audio.sampleRate, numberOfFrames: FRAME,
            numberOfChannels: 1, timestamp, data: pending,
          }));
          timestamp += Math.round((FRAME / this.audio.sampleRate) * 1e6);
          filled = 0;
        }
      }
    };
    this.tap = tap;
  }

  sendFrame(chunk) {
    if (this.left || this.muted || chunk.byteLength > MAX_PAYLOAD) return;
    const payload = new Uint8Array(chunk.byteLength);
    chunk.copyTo(payload);
    this.seq += 1n;
    this.seal(KIND_VOICE, this.seq, payload).then((sent) => {
      if (sent) this.stats.sent += 1;
    });
  }

  ping() {
    const stamp = new Uint8Array(8);
    new DataView(stamp.buffer).setFloat64(0, performance.now());
    return this.seal(KIND_PING, 0n, stamp);
  }

  /** Seals a packet under the current key (counter taken before the await) and sends it. */
  async seal(kind, speakerSeq, payload) {
    const epoch = this.epoch;
    const k = this.keys.get(epoch);
    if (!k || this.left) return false;
    this.counter += 1n;
    const counter = this.counter;
    const packet = new Uint8Array(HEADER + payload.length + TAG);
    const v = new DataView(packet.buffer);
    packet[0] = kind;
    packet[1] = AES_256_GCM;
    v.setUint32(4, this.participantId);
    v.setUint32(8, epoch);
    v.setBigUint64(12, counter);
    v.setUint32(20, this.participantId);
    v.setBigUint64(24, speakerSeq);
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce(0, counter), additionalData: packet.subarray(0, HEADER), tagLength: 128 },
      k.key, payload);
    packet.set(new Uint8Array(sealed), HEADER);
    return this.events.sendBinary(packet);
  }

  /** A binary frame from the event stream. */
  async receive(buffer) {
    if (this.left || buffer.byteLength < HEADER + TAG) return;
    const bytes = new Uint8Array(buffer);
    const v = new DataView(buffer);
    const kind = bytes[0];
    const counter = v.getBigUint64(12);
    const k = this.keys.get(v.getUint32(8));
    if (v.getUint32(4) !== this.participantId || !k || !k.fresh(counter)) {
      this.stats.dropped += 1;
      return;
    }
    let payload;
    try {
      payload = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce(1, counter), additionalData: bytes.subarray(0, HEADER), tagLength: 128 },
        k.key, bytes.subarray(HEADER)));
    } catch {
      this.stats.dropped += 1;
      return;
    }
    if (!k.fresh(counter)) return;
    k.record(counter);
    if (kind === KIND_VOICE) {
      this.stats.received += 1;
      this.play(v.getUint32(20), v.getBigUint64(24), payload);
    } else if (kind === KIND_PONG && payload.length >= 8) {
      this.stats.rttMs = Math.round(performance.now() - new DataView(payload.buffer).getFloat64(0));
    } else if (kind === KIND_CHALLENGE) {
      this.seal(KIND_RESPONSE, 0n, payload);
    }
  }

  play(speaker, seq, payload) {
    if (this.deafened || !canDecode()) return;
    let s = this.speakers.get(speaker);
    if (!s) {
      if (this.speakers.size >= MAX_SPEAKERS) {
        const [oldest] = [...this.speakers.entries()].sort((a, b) => a[1].heard - b[1].heard)[0];
        this.dropSpeaker(oldest);
      }
      s = { next: 0, decoder: null, failedAt: -Infinity, heard: 0 };
      this.speakers.set(speaker, s);
    }
    s.heard = performance.now();
    if (!s.decoder || s.decoder.state === "closed") {
      if (s.heard - s.failedAt < DECODER_RETRY_MS) {
        this.stats.undecodable += 1;
        return;
      }
      s.decoder = new AudioDecoder({
        output: (data) => this.schedule(s, data),
        error: () => {
          s.decoder = null;
          s.failedAt = performance.now();
          this.stats.undecodable += 1;
        },
      });
      s.decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
    }
    try {
      s.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: Number(seq) * 20000, data: payload }));
    } catch {
      this.stats.undecodable += 1;
    }
  }

  schedule(s, data) {
    try {
      if (this.left || this.deafened) return;
      const frames = data.numberOfFrames;
      const pcm = new Float32Array(frames);
      data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
      const buffer = this.audio.createBuffer(1, frames, data.sampleRate);
      buffer.copyToChannel(pcm, 0);
      const now = this.audio.currentTime;
      if (s.next < now || s.next > now + MAX_LAG) s.next = now + PLAYOUT_DELAY;
      const source = this.audio.createBufferSource();
      source.buffer = buffer;
      source.connect(this.audio.destination);
      source.start(s.next);
      s.next += buffer.duration;
      this.stats.played += 1;
    } finally {
      data.close();
    }
  }

  dropSpeaker(id) {
    const s = this.speakers.get(id);
    if (s?.decoder && s.decoder.state !== "closed") s.decoder.close();
    this.speakers.delete(id);
  }

  setMuted(muted) {
    this.muted = muted;
    this.onChange();
  }

  setDeafened(deafened) {
    this.deafened = deafened;
    for (const id of [...this.speakers.keys()]) this.dropSpeaker(id);
    this.onChange();
  }

  /** A renewed key (`VoiceKey`): sending switches to it, the previous one still opens. */
  async useKey(data) {
    if (data.participantId !== this.participantId) return;
    const key = new EpochKey(await importKey(data.key));
    // Checked after the import: a later renewal may have been taken meanwhile.
    if (data.keyEpoch <= this.epoch) return;
    this.keys.set(data.keyEpoch, key);
    this.epoch = data.keyEpoch;
    for (const e of this.keys.keys()) if (e < data.keyEpoch - 1) this.keys.delete(e);
    // Proof that we hold the new key, so the server seals with it at once.
    this.ping();
  }

  /** Voice events for this room; returns false when the call is over. */
  onEvent(type, data) {
    if (data.roomId !== this.roomId || this.left) return true;
    switch (type) {
      case "VoiceKey":
        if (data.participantId === this.participantId) this.useKey(data);
        // Perhaps ours, before a join's (or rejoin's) answer has said which participant we
        // are: the last few are kept for useJoin.
        else this.earlyKeys = [...this.earlyKeys.slice(-7), data];
        break;
      case "VoiceParticipantJoined":
        this.participants.set(data.participantId, data.userId);
        break;
      case "VoiceParticipantLeft":
        if (data.participantId === this.participantId) {
          this.error = data.reason === "left" ? null : `Dropped from voice (${data.reason})`;
          this.stop();
          return false;
        }
        this.participants.delete(data.participantId);
        this.talking.delete(data.participantId);
        this.dropSpeaker(data.participantId);
        break;
      case "VoiceTalking":
        if (data.talking) this.talking.add(data.participantId);
        else this.talking.delete(data.participantId);
        break;
      case "VoiceRejoin":
        this.rejoin().catch((e) => {
          this.error = e.message;
          this.stop();
          this.onChange();
        });
        break;
      default:
        return true;
    }
    this.onChange();
    return true;
  }

  /** Ends the call here (microphone off, keys and decoders gone). */
  stop() {
    this.left = true;
    clearInterval(this.pinger);
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    if (this.tap) this.tap.port.onmessage = null;
    if (this.encoder && this.encoder.state !== "closed") this.encoder.close();
    for (const id of [...this.speakers.keys()]) this.dropSpeaker(id);
    if (this.audio) this.audio.close().catch(() => {});
    this.keys.clear();
  }

  async leave() {
    const id = this.participantId;
    this.stop();
    if (id !== undefined) await api.leaveVoice(this.roomId, id).catch(() => {});
  }
}
