// A room's timeline: the newest messages, live ones appended, each an <article> with its
// author, time and text; the composer below (Enter sends, Shift+Enter a new line).
import { h, replace } from "../dom.mjs";
import { render } from "../markup.mjs";

/** At most this many messages stay in the page: older ones are dropped as new arrive. */
const MAX_NODES = 500;

export class Timeline {
  /** The room's timeline, or (with `parent`) the comments of one message. */
  constructor(app, parent = 0) {
    this.app = app;
    this.parent = parent;
    this.list = h("div", { class: "timeline", role: "log", "aria-label": parent ? "Comments" : "Messages" });
    this.byId = new Map();
    this.messages = new Map();
  }

  name(userId) {
    const u = this.app.users.get(userId);
    return u ? (u.displayName || u.userName) : `user ${userId}`;
  }

  article(m) {
    const when = new Date(m.createdUtc);
    const own = m.userId === this.app.userId;
    const text = h("div", { class: "text" }, render(m.text));
    const reactions = (m.reactions || []).map((r) =>
      h("button", {
        type: "button", class: "reaction plain",
        "aria-pressed": r.userIds.includes(this.app.userId) ? "true" : "false",
        "aria-label": `${r.emoji} ${r.userIds.length}`,
        onclick: () => this.app.react(m, r.emoji, !r.userIds.includes(this.app.userId)),
      }, `${r.emoji} ${r.userIds.length}`));
    const actions = h("div", { class: "actions" },
      h("button", { type: "button", class: "plain", onclick: () => this.app.react(m, "👍", true) }, "React 👍"),
      m.parentMessageId || m.commentCount ? null
        : h("button", { type: "button", class: "plain", onclick: () => this.app.openThread(m) }, "Comment"),
      own ? h("button", { type: "button", class: "plain", onclick: () => this.startEdit(m, node, text) }, "Edit") : null,
      own ? h("button", { type: "button", class: "plain", onclick: () => this.app.remove(m) }, "Delete") : null);
    const edited = m.lastEditedUtc && m.lastEditedUtc !== m.createdUtc ? h("span", { class: "edited" }, " (edited)") : null;
    const node = h("article", { "data-message-id": m.messageId, "aria-label": `${this.name(m.userId)}: ${m.text}` },
      h("span", { class: "who" }, this.name(m.userId)),
      h("time", { datetime: when.toISOString() }, when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
      edited, text, attachments(m),
      reactions.length ? h("div", { class: "reactions" }, reactions) : null,
      m.commentCount && !m.parentMessageId
        ? h("button", { type: "button", class: "plain comments", onclick: () => this.app.openThread(m) },
          `Comments (${m.commentCount})`)
        : null,
      actions);
    return node;
  }

  /** Edits a message in place: Enter saves, Escape cancels. */
  startEdit(m, node, textNode) {
    const box = h("textarea", { "aria-label": "Edit message", class: "edit" });
    box.value = m.text;
    const done = () => box.replaceWith(textNode);
    box.addEventListener("keydown", async (e) => {
      if (e.key === "Escape") done();
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        try {
          await this.app.edit(m, box.value);
        } catch (err) {
          box.setAttribute("aria-invalid", "true");
          box.title = err.message;
        }
      }
    });
    textNode.replaceWith(box);
    box.focus();
  }

  /** Edits the newest own message (Up in an empty composer). */
  editLastOwn() {
    const own = [...this.messages.values()].filter((m) => m.userId === this.app.userId).pop();
    if (!own) return;
    const node = this.byId.get(own.messageId);
    const text = node && node.querySelector(".text");
    if (text) this.startEdit(own, node, text);
  }

  show(messages) {
    this.byId.clear();
    this.messages.clear();
    this.lastDay = null;
    replace(this.list);
    for (const m of messages) this.add(m, false);
    this.list.scrollTop = this.list.scrollHeight;
  }

  add(m, scroll = true) {
    if ((m.parentMessageId || 0) !== this.parent) return;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    const node = this.article(m);
    const old = this.byId.get(m.messageId);
    if (old) {
      old.replaceWith(node);
    } else {
      // A day separator before the first message of each day.
      const day = new Date(m.createdUtc).toDateString();
      if (day !== this.lastDay) {
        this.lastDay = day;
        const label = new Date(m.createdUtc).toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" });
        this.list.append(h("div", { class: "day", role: "separator", "aria-label": label }, label));
      }
      this.list.append(node);
    }
    this.byId.set(m.messageId, node);
    this.messages.set(m.messageId, m);
    while (this.byId.size > MAX_NODES) {
      const [first, firstNode] = this.byId.entries().next().value;
      firstNode.remove();
      this.byId.delete(first);
      this.messages.delete(first);
    }
    if (scroll && atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  remove(messageId) {
    const node = this.byId.get(messageId);
    if (node) node.remove();
    this.byId.delete(messageId);
    this.messages.delete(messageId);
  }
}

/** A message's files: images as thumbnails, each a link to download the file. */
function attachments(m) {
  const files = m.attachments || [];
  if (!files.length) return null;
  return h("ul", { class: "files" }, files.map((a) => {
    const href = `/api/v1/attachments/${a.attachmentId}/${encodeURIComponent(a.fileName)}`;
    const size = a.fileSize < 1024 ? `${a.fileSize} B`
      : a.fileSize < 1048576 ? `${Math.round(a.fileSize / 1024)} KB` : `${(a.fileSize / 1048576).toFixed(1)} MB`;
    return h("li", {}, h("a", { href, download: a.fileName },
      a.hasThumbnail ? h("img", { src: `/api/v1/thumbnails/${a.attachmentId}`, alt: a.fileName, loading: "lazy" }) : null,
      h("span", {}, `${a.fileName} (${size})`)));
  }));
}

export function composer(onSend, onTyping, onUp, label = "Message") {
  const box = h("textarea", { "aria-label": label, placeholder: label === "Message" ? "Write a message" : "Write a comment", rows: 1 });
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
    } else if (e.key === "ArrowUp" && !box.value && onUp) {
      e.preventDefault();
      onUp();
    }
  });
  box.addEventListener("input", () => onTyping && onTyping());
  return { form, box };
}
