// A room's meetings, listed by date (from yesterday, 90 days ahead), with the form that
// schedules one and a link to them all as an iCalendar file. Live: the page passes message
// events, as to the board.
import { api } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { track } from "./tracked.mjs";

const DAY = 86400000;

function localInputValue(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export class MeetingList {
  constructor(app, roomId) {
    this.app = app;
    this.roomId = roomId;
    this.meetings = new Map();
    this.error = h("p", { class: "error", role: "alert" });
    this.list = h("div", { class: "meeting-days" });
    this.node = h("section", { class: "meetings", "aria-label": "Meetings" },
      h("div", { class: "board-head" }, h("h3", {}, "Meetings"),
        h("a", { href: `/api/v1/meetings.ics?roomId=${roomId}`, download: "meetings.ics" }, "Add all to a calendar (.ics)")),
      this.createForm(), this.error, this.list);
  }

  createForm() {
    const text = h("input", { "aria-label": "Meeting title", placeholder: "New meeting", maxlength: 500 });
    const next = Math.ceil(Date.now() / 3600000) * 3600000;
    const when = h("input", { type: "datetime-local", "aria-label": "Starts", value: localInputValue(next) });
    const minutes = h("input", { type: "number", "aria-label": "Duration in minutes", min: 5, max: 1440, step: 5, value: 30 });
    const form = h("form", { class: "new-issue" }, text, when, minutes, h("button", { type: "submit" }, "Schedule meeting"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const start = new Date(when.value).getTime();
      if (!text.value.trim() || Number.isNaN(start)) return;
      try {
        const { message } = await api.sendMeeting(this.roomId, text.value.trim(), {
          timeUtc: start, duration: Math.max(1, Number(minutes.value) || 30) * 60000,
        });
        text.value = "";
        this.error.textContent = "";
        this.onMessage(message);
      } catch (err) {
        this.error.textContent = `Cannot schedule the meeting: ${err.message}`;
      }
    });
    return form;
  }

  async load() {
    const from = Date.now() - DAY;
    const { meetings } = await api.meetings(this.roomId, from, from + 91 * DAY);
    this.meetings = new Map(meetings.map((m) => [m.messageId, m]));
    this.draw();
  }

  /** A created or changed message (only this room's meetings matter). */
  onMessage(m) {
    if (track(this.meetings, this.roomId, "Meeting", m)) this.draw();
  }

  onDeleted(messageId) {
    if (this.meetings.delete(messageId)) this.draw();
  }

  draw() {
    const sorted = [...this.meetings.values()].sort((a, b) => a.meetingProperties.timeUtc - b.meetingProperties.timeUtc);
    const days = new Map();
    for (const m of sorted) {
      const day = new Date(m.meetingProperties.timeUtc).toLocaleDateString(undefined,
        { weekday: "long", year: "numeric", month: "long", day: "numeric" });
      if (!days.has(day)) days.set(day, []);
      days.get(day).push(m);
    }
    if (!days.size) {
      replace(this.list, h("p", { class: "empty" }, "No meetings scheduled."));
      return;
    }
    replace(this.list, [...days.entries()].map(([day, items]) => h("section", { "aria-label": day },
      h("h4", {}, day),
      h("ul", {}, items.map((m) => {
        const start = new Date(m.meetingProperties.timeUtc);
        const end = new Date(m.meetingProperties.timeUtc + m.meetingProperties.duration);
        const t = (d) => d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
        return h("li", { class: "meeting", "data-message-id": m.messageId },
          h("time", { datetime: start.toISOString() }, `${t(start)}–${t(end)}`), " ",
          h("span", { class: "meeting-title" }, (m.text.split("\n")[0] || "").slice(0, 200)),
          " · ", this.app.timeline.name(m.userId), " · ",
          h("a", { href: `/api/v1/meetings/${m.messageId}.ics`, download: `meeting-${m.messageId}.ics` },
            "Add to calendar",
            h("span", { class: "visually-hidden" }, `: ${(m.text.split("\n")[0] || "meeting").slice(0, 80)}`)));
      })))));
  }
}
