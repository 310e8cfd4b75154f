// A room's timeline: the newest messages, live ones appended, each an <article> with its
// author, time and text; the composer below (Enter sends, Shift+Enter a new line).
import { h, replace } from "../dom.mjs";
import { render } from "../markup.mjs";

/** At most this many messages stay in the page: older ones are dropped as new arrive. */
const MAX_NODES = 500;

export class Timeline {
  constructor(app) {
    this.app = app;
    this.list = h("div", { class: "timeline", role: "log", "aria-label": "Messages" });
    this.byId = new Map();
  }

  name(userId) {
    const u = this.app.users.get(userId);
    return u ? (u.displayName || u.userName) : `user ${userId}`;
  }

  article(m) {
    const when = new Date(m.createdUtc);
    return h("article", { "data-message-id": m.messageId, "aria-label": `${this.name(m.userId)}: ${m.text}` },
      h("span", { class: "who" }, this.name(m.userId)),
      h("time", { datetime: when.toISOString() }, when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
      h("div", { class: "text" }, render(m.text)));
  }

  show(messages) {
    this.byId.clear();
    replace(this.list);
    for (const m of messages) this.add(m, false);
    this.list.scrollTop = this.list.scrollHeight;
  }

  add(m, scroll = true) {
    if (m.parentMessageId) return;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    const node = this.article(m);
    const old = this.byId.get(m.messageId);
    if (old) {
      old.replaceWith(node);
    } else {
      this.list.append(node);
    }
    this.byId.set(m.messageId, node);
    while (this.byId.size > MAX_NODES) {
      const [first, firstNode] = this.byId.entries().next().value;
      firstNode.remove();
      this.byId.delete(first);
    }
    if (scroll && atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  remove(messageId) {
    const node = this.byId.get(messageId);
    if (node) node.remove();
    this.byId.delete(messageId);
  }
}

export function composer(onSend, onTyping) {
  const box = h("textarea", { "aria-label": "Message", placeholder: "Write a message", rows: 1 });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "composer" }, box, h("button", { type: "submit" }, "Send"), error);
  const send = async () => {
    const text = box.value;
    if (!text.trim()) return;
    box.value = "";
    error.textContent = "";
    try {
      await onSend(text);
    } catch (err) {
      box.value = text;
      error.textContent = err.message;
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  box.addEventListener("input", () => onTyping());
  return { form, box };
}
