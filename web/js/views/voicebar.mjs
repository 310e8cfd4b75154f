// The voice call's controls under the room list: who is in the call and who is talking,
// mute, deafen, leave, and the packet counters (redrawn once a second, not per packet).
// One call at a time; it follows you between rooms. The call itself is voice.mjs.
import { h, replace } from "../dom.mjs";
import { VoiceCall } from "../voice.mjs";

export class VoiceBar {
  constructor(app) {
    this.app = app;
    this.call = null;
    this.error = null;
    this.node = h("section", { class: "voice", "aria-label": "Voice", hidden: true });
    this.joinButton = h("button", { type: "button", class: "plain", onclick: () => this.join(app.current) }, "Join voice");
  }

  /** Joins a room's voice channel (leaving any other call first). */
  async join(roomId) {
    if (roomId === null) return;
    if (this.call) await this.leave();
    const call = new VoiceCall(roomId, this.app.events, () => this.draw());
    this.call = call;
    this.draw();
    try {
      await call.join();
    } catch (e) {
      call.stop();
      this.call = null;
      this.error = e.message;
    }
    this.draw();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.drawStats(), 1000);
  }

  async leave() {
    const call = this.call;
    this.call = null;
    clearInterval(this.timer);
    this.draw();
    if (call) await call.leave();
  }

  /** Logged out: the call ends here without a word to the server (the session is gone). */
  stop() {
    if (this.call) this.call.stop();
    this.call = null;
    clearInterval(this.timer);
  }

  /** A binary frame of the event stream. */
  receive(packet) {
    if (this.call) this.call.receive(packet);
  }

  onEvent(type, data) {
    if (this.call && !this.call.onEvent(type, data)) this.draw();
  }

  /** The room on screen changed: its "Join voice" shows unless we are in its call. */
  roomShown(roomId) {
    this.joinButton.hidden = Boolean(this.call && !this.call.left && this.call.roomId === roomId);
  }

  draw() {
    const call = this.call;
    this.roomShown(this.app.current);
    if (!call || call.left) {
      if (call) this.error = call.error;
      this.call = null;
      clearInterval(this.timer);
      this.node.hidden = !this.error;
      replace(this.node, this.error ? h("p", { class: "error", role: "alert" }, this.error) : null);
      return;
    }
    this.error = null;
    const room = this.app.rooms.get(call.roomId);
    const toggle = (label, pressed, onclick) =>
      h("button", { type: "button", class: "plain", "aria-pressed": String(pressed), onclick }, label);
    const people = [[call.participantId, this.app.userId], ...call.participants.entries()];
    this.stats = h("p", { class: "voice-stats" });
    replace(this.node,
      h("h3", {}, `Voice: ${room ? room.displayName : `room ${call.roomId}`}`),
      h("ul", { "aria-label": "In the call" }, people.map(([pid, uid]) => {
        const talking = call.talking.has(pid);
        return h("li", { class: talking ? "talking" : null, "data-participant-id": pid },
          h("span", { class: "presence online", "aria-hidden": "true" }),
          pid === call.participantId ? "You" : this.app.timeline.name(uid),
          talking ? " — talking" : "");
      })),
      toggle("Mute", call.muted, () => call.setMuted(!call.muted)),
      toggle("Deafen", call.deafened, () => call.setDeafened(!call.deafened)),
      h("button", { type: "button", class: "plain", onclick: () => this.leave() }, "Leave voice"),
      this.stats,
      call.error ? h("p", { class: "error", role: "alert" }, call.error) : null);
    this.node.hidden = false;
    this.drawStats();
  }

  drawStats() {
    const call = this.call;
    if (!call || !this.stats) return;
    const s = call.stats;
    this.stats.dataset.sent = s.sent;
    this.stats.dataset.received = s.received;
    this.stats.dataset.played = s.played;
    this.stats.dataset.undecodable = s.undecodable;
    this.stats.dataset.dropped = s.dropped;
    this.stats.dataset.capture = call.capture || "none";
    this.stats.textContent = `Sent ${s.sent} · received ${s.received}`
      + (s.rttMs === null ? "" : ` · ${s.rttMs} ms round trip`);
  }
}
