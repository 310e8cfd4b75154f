// A room's timeline (or one message's comments): a window of at most MAX_NODES messages,
// each an <article> with its author, time, text, files, reactions and receipts. Scrolling
// up loads older pages and drops the newest beyond the window (scrolling down brings them
// back), so a room of any length costs the same DOM. Day separators and the unread marker
// are drawn from the window's order; live messages are appended when the window is at the
// newest end (the oldest leaving in place once it is full). The composer below: Enter
// sends, Shift+Enter a new line, Up edits.
import { h, replace } from "../dom.mjs";
import { render } from "../markup.mjs";

/** At most this many messages stay in the page. */
export const MAX_NODES = 300;
/** Messages per page loaded while scrolling. */
export const PAGE = 100;
/** Load the next page when the view is this close (px) to an end. */
const EDGE = 400;

// Formatters made once (toLocale…String() builds one per call: ~5 ms of a 100-message page).
const TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DAY = new Intl.DateTimeFormat([], { weekday: "long", day: "numeric", month: "long" });
const WHEN = new Intl.DateTimeFormat([], { dateStyle: "medium", timeStyle: "short" });
const dayOf = (m) => Math.floor((m.createdUtc - new Date(m.createdUtc).getTimezoneOffset() * 60000) / 86400000);
const dayLabel = (m) => DAY.format(m.createdUtc);
const daySeparator = (m) => h("div", { class: "day", role: "separator", "aria-label": dayLabel(m) }, dayLabel(m));
const unreadMarker = () => h("div", { class: "unread-marker", role: "separator", "aria-label": "New messages" }, "New messages");

export class Timeline {
  /**
   * The room's timeline, or (with `parent`) the comments of one message. `loader(cursor,
   * direction)` fetches a page (room timelines only: comments come in one piece).
   */
  constructor(app, parent = 0) {
    this.app = app;
    this.parent = parent;
    this.list = h("div", { class: "timeline", role: "log", "aria-label": parent ? "Comments" : "Messages" });
    this.nodes = new Map();
    this.messages = new Map();
    this.order = [];
    this.hasOlder = false;
    this.hasNewer = false;
    this.loading = false;
    this.unreadFrom = null;
    this.loader = null;
    this.list.addEventListener("scroll", () => this.onScroll(), { passive: true });
  }

  name(userId) {
    const u = this.app.users.get(userId);
    return u ? (u.displayName || u.userName) : `user ${userId}`;
  }

  /** "Seen by …" from a message's read receipts (its author left out). */
  seenBy(m) {
    const readers = (m.readTimestamps || []).map((r) => r.userId).filter((id) => id !== m.userId);
    if (!readers.length) return null;
    const names = readers.slice(0, 3).map((id) => this.name(id));
    const more = readers.length > 3 ? ` and ${readers.length - 3} more` : "";
    return h("div", { class: "seen" }, `Seen by ${names.join(", ")}${more}`);
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
      m.parentMessageId ? null
        : h("button", { type: "button", class: "plain", onclick: (e) => this.app.copyLink(m, e.currentTarget) }, "Copy link"),
      own ? h("button", { type: "button", class: "plain", onclick: () => this.startEdit(m, node, text) }, "Edit") : null,
      own ? h("button", { type: "button", class: "plain", onclick: () => this.app.remove(m) }, "Delete") : null);
    const edited = m.lastEditedUtc && m.lastEditedUtc !== m.createdUtc ? h("span", { class: "edited" }, " (edited)") : null;
    const node = h("article", { "data-message-id": m.messageId, "aria-label": `${this.name(m.userId)}: ${m.text}` },
      h("span", { class: "who" }, this.name(m.userId)),
      h("time", { datetime: when.toISOString() }, TIME.format(when)),
      edited, kindLine(m, this), text, attachments(m, own ? (a) => this.app.deleteFile(a) : null),
      reactions.length ? h("div", { class: "reactions" }, reactions) : null,
      m.commentCount && !m.parentMessageId
        ? h("button", { type: "button", class: "plain comments", onclick: () => this.app.openThread(m) },
          `Comments (${m.commentCount})`)
        : null,
      this.seenBy(m), actions);
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
    const id = [...this.order].reverse().find((i) => this.messages.get(i).userId === this.app.userId);
    if (id === undefined) return;
    const own = this.messages.get(id);
    const node = this.nodes.get(id);
    const text = node && node.querySelector(".text");
    if (text) this.startEdit(own, node, text);
  }

  /**
   * Shows a page of messages (oldest first). `hasOlder`/`hasNewer`: whether the room goes
   * on beyond it; `unread`: how many of the newest are unread (the marker goes before them).
   */
  show(messages, { hasOlder = false, hasNewer = false, unread = 0 } = {}) {
    // A page still on its way belongs to the window being replaced: it will be dropped.
    this.generation = (this.generation || 0) + 1;
    this.nodes.clear();
    this.messages.clear();
    for (const m of messages) this.messages.set(m.messageId, m);
    this.order = [...this.messages.keys()].sort((a, b) => a - b);
    this.hasOlder = hasOlder;
    this.hasNewer = hasNewer;
    this.unreadFrom = null;
    if (unread > 0) {
      let left = unread;
      for (let i = this.order.length - 1; i >= 0 && left > 0; i--) {
        if (this.messages.get(this.order[i]).userId !== this.app.userId) {
          this.unreadFrom = this.order[i];
          left--;
        }
      }
    }
    this.draw();
    this.list.scrollTop = this.list.scrollHeight;
  }

  /** Rebuilds the list from the window's order, reusing each message's article. */
  draw() {
    const children = [];
    if (this.hasOlder && this.loader) children.push(this.olderButton());
    let lastDay = null;
    for (const id of this.order) {
      const m = this.messages.get(id);
      if (dayOf(m) !== lastDay) {
        lastDay = dayOf(m);
        children.push(daySeparator(m));
      }
      if (id === this.unreadFrom) children.push(unreadMarker());
      let node = this.nodes.get(id);
      if (!node) {
        node = this.article(m);
        this.nodes.set(id, node);
      }
      children.push(node);
    }
    if (this.hasNewer && this.loader) {
      children.push(h("button", { type: "button", class: "plain more", onclick: () => this.app.jumpToNewest() }, "Jump to newest"));
    }
    replace(this.list, children);
  }

  olderButton() {
    return h("button", { type: "button", class: "plain more", onclick: () => this.loadOlder() }, "Load older messages");
  }

  /**
   * Drops the oldest messages beyond MAX_NODES from the page in place (a live message at a
   * full window): their articles go, and what stands before the new first one (button, day
   * separator, unread marker) is made again. Redrawing the window instead cost 2–4 ms of
   * 300 articles per live message.
   */
  trimOldest() {
    const dropped = this.order.splice(0, this.order.length - MAX_NODES);
    for (const id of dropped) {
      this.nodes.get(id)?.remove();
      this.nodes.delete(id);
      this.messages.delete(id);
    }
    this.hasOlder = true;
    const firstId = this.order[0];
    const first = this.nodes.get(firstId);
    if (!first || first.parentNode !== this.list) return this.draw();
    while (first.previousSibling) first.previousSibling.remove();
    const head = [daySeparator(this.messages.get(firstId))];
    if (this.loader) head.unshift(this.olderButton());
    if (firstId === this.unreadFrom) head.push(unreadMarker());
    first.before(...head);
  }

  onScroll() {
    if (this.loading || !this.loader) return;
    const { scrollTop, scrollHeight, clientHeight } = this.list;
    if (this.hasOlder && scrollTop < EDGE) this.loadOlder();
    else if (this.hasNewer && scrollHeight - scrollTop - clientHeight < EDGE) this.loadNewer();
  }

  /** The first article at least partly in view, and how far below the top it is. */
  anchor() {
    const top = this.list.getBoundingClientRect().top;
    for (const id of this.order) {
      const node = this.nodes.get(id);
      const r = node && node.getBoundingClientRect();
      if (r && r.bottom > top) return { node, offset: r.top - top };
    }
    return null;
  }

  /** Scrolls so that `anchor` (from `anchor()`) is where it was, if it is still here. */
  restore(anchor) {
    if (anchor && anchor.node.isConnected) {
      this.list.scrollTop += anchor.node.getBoundingClientRect().top - this.list.getBoundingClientRect().top - anchor.offset;
    }
  }

  /** Loads a page in `direction`, then trims the window at the other end. */
  async loadPage(direction) {
    if (this.loading || !this.loader || !this.order.length) return;
    this.loading = true;
    try {
      const backward = direction === "backward";
      const cursor = backward ? this.order[0] : this.order[this.order.length - 1];
      const generation = this.generation;
      const { messages } = await this.loader(cursor, direction);
      if (generation !== this.generation) return;
      const anchor = this.anchor();
      for (const m of messages) this.messages.set(m.messageId, m);
      this.order = [...this.messages.keys()].sort((a, b) => a - b);
      if (backward) this.hasOlder = messages.length >= PAGE;
      else this.hasNewer = messages.length >= PAGE;
      const excess = this.order.length - MAX_NODES;
      if (excess > 0) {
        const dropped = backward ? this.order.splice(this.order.length - excess) : this.order.splice(0, excess);
        for (const id of dropped) {
          this.messages.delete(id);
          this.nodes.delete(id);
        }
        if (backward) this.hasNewer = true;
        else this.hasOlder = true;
      }
      this.draw();
      // Keep what the reader was looking at where it was.
      this.restore(anchor);
    } finally {
      this.loading = false;
    }
  }

  loadOlder() {
    return this.loadPage("backward");
  }

  loadNewer() {
    return this.loadPage("forward");
  }

  /** Scrolls to a message in the window and highlights it; false when it is not here. */
  reveal(messageId) {
    const node = this.nodes.get(messageId);
    if (!node) return false;
    node.classList.add("highlight");
    node.setAttribute("tabindex", "-1");
    node.scrollIntoView({ block: "center" });
    node.focus({ preventScroll: true });
    setTimeout(() => node.classList.remove("highlight"), 4000);
    return true;
  }

  /** A new or changed message (live, or an answer of ours). */
  add(m) {
    if ((m.parentMessageId || 0) !== this.parent) return;
    const old = this.nodes.get(m.messageId);
    if (old) {
      this.messages.set(m.messageId, m);
      const node = this.article(m);
      old.replaceWith(node);
      this.nodes.set(m.messageId, node);
      return;
    }
    const last = this.order[this.order.length - 1];
    if (this.hasNewer || (last !== undefined && m.messageId < this.order[0])) return;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.messages.set(m.messageId, m);
    if (last === undefined || m.messageId > last) {
      const lastMessage = last === undefined ? null : this.messages.get(last);
      this.order.push(m.messageId);
      const node = this.article(m);
      this.nodes.set(m.messageId, node);
      if (!lastMessage || dayOf(lastMessage) !== dayOf(m)) this.list.append(daySeparator(m));
      this.list.append(node);
    } else {
      this.order = [...this.messages.keys()].sort((a, b) => a - b);
      this.draw();
    }
    if (this.order.length > MAX_NODES) {
      // Trimming the top moves what a reader further up is looking at: keep it in place.
      const anchor = atBottom ? null : this.anchor();
      this.trimOldest();
      this.restore(anchor);
    }
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  /** Read receipts new since the message was drawn (the `readDeltas` event). */
  addReceipts(messageId, receipts) {
    const m = this.messages.get(messageId);
    if (!m) return;
    const known = new Map((m.readTimestamps || []).map((r) => [r.userId, r]));
    for (const r of receipts) known.set(r.userId, r);
    this.add({ ...m, readTimestamps: [...known.values()] });
  }

  remove(messageId) {
    const node = this.nodes.get(messageId);
    if (!node) return;
    this.nodes.delete(messageId);
    this.messages.delete(messageId);
    this.order = this.order.filter((id) => id !== messageId);
    this.draw();
  }
}

const STATUS_LABEL = { Backlog: "Backlog", ToDo: "To do", InProgress: "In progress", ToVerify: "To verify", Done: "Done", Declined: "Declined" };

/** An issue's type, status and assignees, or a meeting's time, above its text. */
function kindLine(m, timeline) {
  if (m.messageType === "Issue" && m.issueProperties) {
    const p = m.issueProperties;
    const who = p.assignees.length ? ` · → ${p.assignees.map((id) => timeline.name(id)).join(", ")}` : "";
    return h("div", { class: "kind" }, `Issue · ${p.type.replace(/([a-z])([A-Z])/g, "$1 $2")} · ${STATUS_LABEL[p.status] || p.status}${who}`);
  }
  if (m.messageType === "Meeting" && m.meetingProperties) {
    const start = new Date(m.meetingProperties.timeUtc);
    const minutes = Math.round(m.meetingProperties.duration / 60000);
    return h("div", { class: "kind" }, `Meeting · ${WHEN.format(start)} · ${minutes} min`);
  }
  return null;
}

/** A message's files: images as thumbnails, each a link to download the file (and, for
 * the author, a button that deletes it). */
function attachments(m, onDelete) {
  const files = m.attachments || [];
  if (!files.length) return null;
  return h("ul", { class: "files" }, files.map((a) => {
    const href = `/api/v1/attachments/${a.attachmentId}/${encodeURIComponent(a.fileName)}`;
    const size = a.fileSize < 1024 ? `${a.fileSize} B`
      : a.fileSize < 1048576 ? `${Math.round(a.fileSize / 1024)} KB` : `${(a.fileSize / 1048576).toFixed(1)} MB`;
    return h("li", {}, h("a", { href, download: a.fileName },
      a.hasThumbnail ? h("img", { src: `/api/v1/thumbnails/${a.attachmentId}`, alt: a.fileName, loading: "lazy" }) : null,
      h("span", {}, `${a.fileName} (${size})`)),
    onDelete ? h("button", { type: "button", class: "plain small", onclick: () => onDelete(a) }, `Delete ${a.fileName}`) : null);
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
