// Confab Web: boots, shows the login form or the team, and keeps the page in step with
// the event stream. Views live in views/, every server call in api.mjs.
import { api, Events, upload } from "./api.mjs";
import { h, replace } from "./dom.mjs";
import { loginView } from "./views/login.mjs";
import { AdminPage } from "./views/admin.mjs";
import { IssueBoard } from "./views/board.mjs";
import { MeetingList } from "./views/meetings.mjs";
import { RoomSettings } from "./views/roomsettings.mjs";
import { SearchResults } from "./views/search.mjs";
import { SettingsPage } from "./views/settings.mjs";
import { composer, PAGE, Timeline } from "./views/timeline.mjs";
import { VoiceBar } from "./views/voicebar.mjs";
import { enableNotifications, notificationsWanted, subscribePush } from "./notify.mjs";

const root = document.getElementById("app");
/** Sync log pages (of 1,000 changes) replayed after a reconnection before reloading instead. */
const SYNC_PAGES = 5;

class App {
  constructor(userId) {
    this.userId = userId;
    this.users = new Map();
    this.rooms = new Map();
    this.current = null;
    this.typing = new Map();
    this.lastTypingSent = 0;
    this.timeline = new Timeline(this);
    this.roomList = h("ul");
    this.newRoom = this.newRoomForm();
    this.title = h("h2", { id: "room-title" }, "");
    this.typingLine = h("div", { class: "typing", "aria-live": "polite" });
    this.searchResults = new SearchResults(this);
    const { form } = composer((text) => this.send(text), () => this.sendTyping(),
      () => this.timeline.editLastOwn());
    this.composer = form;
    this.uploads = h("ul", { class: "uploads", "aria-label": "Uploads" });
    const picker = h("input", { type: "file", multiple: true, id: "attach", class: "visually-hidden" });
    picker.addEventListener("change", () => {
      this.sendFiles([...picker.files]);
      picker.value = "";
    });
    form.prepend(h("label", { for: "attach", class: "attach", title: "Attach files" },
      h("span", { class: "visually-hidden" }, "Attach files"), "📎"), picker);
    form.querySelector("textarea").addEventListener("paste", (e) => {
      const files = [...(e.clipboardData?.files || [])];
      if (files.length) {
        e.preventDefault();
        this.sendFiles(files);
      }
    });
    this.memberList = h("ul");
    this.membersPanel = h("aside", { class: "panel", "aria-label": "Members", hidden: true },
      h("h3", {}, "Members"), this.memberList);
    this.thread = null;
    this.threadPanel = h("aside", { class: "panel", "aria-label": "Comments", hidden: true });
    this.search = h("input", { type: "search", "aria-label": "Search", placeholder: "Search messages" });
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") this.searchResults.run(this.search.value);
      if (e.key === "Escape") this.searchResults.close();
    });
    this.meName = h("span", { class: "name" });
    this.me = h("a", { class: "me", href: "#/settings" }, this.meName,
      h("span", { class: "visually-hidden" }, " (your settings)"));
    this.adminLink = h("a", { href: "#/admin", hidden: true }, "Administration");
    this.notifyButton = h("button", { type: "button", class: "plain", hidden: !notificationsWanted(),
      onclick: () => this.askNotifications() }, "Enable notifications");
    this.tabs = h("ul", { class: "tabs" });
    this.viewHost = h("div", { class: "view-host", hidden: true });
    this.noticeLine = h("p", { class: "notice", role: "status" });
    const heading = h("div", { class: "room-head" }, this.title,
      h("div", { class: "room-tools" },
        this.membersButton = h("button", { type: "button", class: "plain", "aria-expanded": "false",
          onclick: () => this.toggleMembers() }, "Members"),
        this.pinButton = h("button", { type: "button", class: "plain", "aria-pressed": "false",
          onclick: () => this.togglePin() }, "Pin room"),
        (this.voiceBar = new VoiceBar(this)).joinButton,
        this.leaveButton = h("button", { type: "button", class: "plain", onclick: () => this.leave() }, "Leave room")));
    this.main = h("main", { class: "room", "aria-labelledby": "room-title" },
      heading, h("nav", { "aria-label": "Room views" }, this.tabs), this.searchResults.node, this.noticeLine,
      this.timeline.list, this.viewHost, this.typingLine, this.uploads, this.composer);
    this.pageHost = h("main", { class: "page", hidden: true });
    this.main.addEventListener("dragover", (e) => {
      if (e.dataTransfer?.types?.includes("Files")) e.preventDefault();
    });
    this.main.addEventListener("drop", (e) => {
      const files = [...(e.dataTransfer?.files || [])];
      if (files.length) {
        e.preventDefault();
        this.sendFiles(files);
      }
    });
    this.node = h("div", { class: "shell" },
      h("header", { class: "top" }, this.me, this.search, this.notifyButton, this.adminLink,
        h("button", { type: "button", class: "plain", onclick: () => this.logout() }, "Log out")),
      h("div", { class: "left" },
        h("nav", { class: "rooms", "aria-label": "Rooms" }, this.roomList, this.newRoom),
        this.voiceBar.node),
      this.main, this.pageHost, this.membersPanel, this.threadPanel);
    // Window listeners go when this App does (log out), or an old App would act for the
    // next user.
    this.onHash = () => this.route();
    this.onVisible = () => {
      if (document.hidden || this.timeline.hasNewer) return;
      this.markRead(this.timeline.messages.get(this.timeline.order[this.timeline.order.length - 1]));
    };
    window.addEventListener("hashchange", this.onHash);
    document.addEventListener("visibilitychange", this.onVisible);
    if ("Notification" in window && Notification.permission === "granted") subscribePush().catch(() => {});
    this.events = new Events((type, data) => this.onEvent(type, data), () => this.catchUp());
    this.events.onBinary = (packet) => this.voiceBar.receive(packet);
    // 1008: the session was ended (logged out elsewhere, suspended): back to the login
    // form if it really is gone, else connect again.
    this.events.onClose = (e) => {
      if (e.code !== 1008) return true;
      api.status().then(() => {
        this.events.closed = false;
        this.events.connect();
      }, () => this.loggedOut());
      return false;
    };
  }

  async togglePin() {
    const room = this.rooms.get(this.current);
    if (!room) return;
    try {
      const { room: r } = await api.pin(room.roomId, !room.isPinned);
      this.rooms.set(r.roomId, r);
      this.drawRooms();
    } catch (e) {
      this.notice(e.message);
    }
  }

  /** A room just made or joined: listed, and opened. */
  enterRoom(room) {
    this.rooms.set(room.roomId, room);
    location.hash = `#/room/${room.roomId}`;
  }

  /** A private room with one other person (the existing one, if there is one). */
  async openPrivate(userId) {
    try {
      this.enterRoom((await api.privateRoom(userId)).room);
    } catch (e) {
      this.notice(e.message);
    }
  }

  /** "New room": a name, then the room is made (with the creator as its moderator). */
  newRoomForm() {
    const name = h("input", { "aria-label": "Room name", placeholder: "New room name", maxlength: 128 });
    const error = h("p", { class: "error", role: "alert" });
    this.privatePick = h("select", { "aria-label": "Private chat with" });
    this.privatePick.addEventListener("change", () => {
      const id = Number(this.privatePick.value);
      this.privatePick.value = "";
      if (id) this.openPrivate(id);
    });
    const form = h("form", { class: "new-room" }, name, h("button", { type: "submit" }, "Create room"), error,
      this.privatePick);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!name.value.trim()) return;
      try {
        const { room } = await api.createRoom(name.value.trim());
        name.value = "";
        error.textContent = "";
        this.enterRoom(room);
      } catch (err) {
        error.textContent = err.message;
      }
    });
    return form;
  }

  /** Leaving takes two clicks: "Leave room", then "Confirm: leave room" within 5 s. */
  async leave() {
    if (this.current === null) return;
    if (!this.leaveArmed) {
      this.leaveArmed = true;
      this.leaveButton.textContent = "Confirm: leave room";
      setTimeout(() => this.disarmLeave(), 5000);
      return;
    }
    this.disarmLeave();
    // The room left, not whichever is open when the answer comes (RoomDeleted may come
    // first and open another).
    const id = this.current;
    try {
      await api.leave(id);
      this.rooms.delete(id);
      location.hash = "#/";
      this.route(true);
    } catch (err) {
      this.searchResults.error(err.message);
    }
  }

  disarmLeave() {
    this.leaveArmed = false;
    this.leaveButton.textContent = "Leave room";
  }

  /** `#/join/CODE`: a join link. */
  async joinByLink(code) {
    try {
      this.enterRoom((await api.join(code)).room);
    } catch (err) {
      location.hash = "#/";
      this.searchResults.error(`Cannot join: ${err.message}`);
    }
  }

  async react(m, emoji, add) {
    const { message } = await api.react(m.messageId, emoji, add);
    this.updated(message);
  }

  async edit(m, text) {
    const { message } = await api.edit(m.messageId, text);
    this.updated(message);
  }

  async deleteFile(a) {
    try {
      await api.deleteFile(a.attachmentId);
      this.notice(`Deleted ${a.fileName}`);
    } catch (e) {
      this.notice(e.message);
    }
  }

  async remove(m) {
    await api.remove(m.messageId);
    this.timeline.remove(m.messageId);
    if (this.thread) this.thread.timeline.remove(m.messageId);
  }

  updated(message) {
    this.timeline.add(message);
    if (this.thread) this.thread.timeline.add(message);
  }

  async openThread(m) {
    this.membersPanel.hidden = true;
    this.membersButton.setAttribute("aria-expanded", "false");
    const timeline = new Timeline(this, m.messageId);
    const { form } = composer(async (text) => {
      const { message } = await api.comment(m.messageId, text);
      timeline.add(message);
    }, null, null, "Comment");
    this.thread = { parent: m.messageId, timeline };
    replace(this.threadPanel,
      h("h3", {}, "Comments"),
      h("p", { class: "parent" }, `${this.timeline.name(m.userId)}: ${m.text}`),
      timeline.list, form,
      h("button", { type: "button", class: "plain", onclick: () => this.closeThread() }, "Close comments"));
    this.threadPanel.hidden = false;
    const { messages } = await api.comments(m.messageId);
    timeline.show(messages);
    form.querySelector("textarea").focus();
  }

  closeThread() {
    this.thread = null;
    this.threadPanel.hidden = true;
    replace(this.threadPanel);
  }

  async toggleMembers() {
    const open = this.membersPanel.hidden;
    if (open) this.closeThread();
    this.membersPanel.hidden = !open;
    this.membersButton.setAttribute("aria-expanded", String(open));
    if (open) await this.drawMembers();
  }

  async drawMembers() {
    if (this.membersPanel.hidden || this.current === null) return;
    const { members } = await api.members(this.current).catch(() => ({ members: [] }));
    replace(this.memberList, members.map((mem) => {
      const u = this.users.get(mem.userId) || {};
      const presence = u.presence || "offline";
      return h("li", { "data-user-id": mem.userId },
        h("span", { class: `presence ${presence}`, "aria-hidden": "true" }),
        this.timeline.name(mem.userId), ` — ${presence}`,
        u.statusText ? h("span", { class: "status" }, ` (${u.statusText})`) : null,
        mem.isModerator ? h("span", { class: "role" }, " · moderator") : null);
    }));
  }

  /**
   * After each (re)connection: users and rooms again, then — on a reconnection — what
   * changed while the stream was down, from the sync log (docs/api.md "Sync"): messages
   * created or edited, deletions. Applying a change twice is harmless, so nothing is
   * missed and nothing doubled, and the reader keeps their place. Too far behind (more
   * than SYNC_PAGES pages, or past the log's horizon): the open room's newest page again.
   */
  async catchUp() {
    try {
      const first = this.syncCursor === undefined;
      const [{ users }, { rooms }, start] = await Promise.all([
        api.users(), api.rooms(), first ? api.sync(0, 1) : null,
      ]);
      this.users = new Map(users.map((u) => [u.userId, u]));
      const me = this.users.get(this.userId);
      this.meName.textContent = me ? (me.displayName || me.userName) : "";
      this.adminLink.hidden = !this.isAdmin();
      replace(this.privatePick, h("option", { value: "" }, "Private chat with…"),
        users.filter((u) => u.userId !== this.userId && u.status !== "Suspended" && u.status !== "DeletionInProgress")
          .map((u) => h("option", { value: u.userId }, u.displayName || u.userName)));
      this.rooms = new Map(rooms.map((r) => [r.roomId, r]));
      this.drawRooms();
      if (first) this.syncCursor = start.cursor;
      if (first || !this.rooms.has(this.current) || !(await this.syncSince())) {
        if (!first) this.syncCursor = (await api.sync(0, 1)).cursor;
        await this.route(true);
      }
    } catch (e) {
      if (e.status === 401) this.loggedOut();
    }
  }

  /** Applies the sync log from the cursor on; false when it is too much to replay. */
  async syncSince() {
    for (let page = 0; page < SYNC_PAGES; page++) {
      const s = await api.sync(this.syncCursor, 1000);
      if (s.resync) return false;
      for (const m of s.messages || []) this.onEvent("TextMessagesUpdated", { messages: [m] });
      for (const d of s.deletedMessages || []) this.onEvent("TextMessageDeleted", d);
      this.syncCursor = s.cursor;
      if (!s.hasMore) {
        const last = this.timeline.order[this.timeline.order.length - 1];
        if (last !== undefined && !this.timeline.hasNewer) this.markRead(this.timeline.messages.get(last));
        return true;
      }
    }
    return false;
  }

  drawRooms() {
    const sorted = [...this.rooms.values()].sort((a, b) =>
      (b.isPinned === true) - (a.isPinned === true) || (a.displayName || "").localeCompare(b.displayName || ""));
    replace(this.roomList, sorted.map((r) => {
      const unread = r.unreadMessageCount || 0;
      const flags = [r.isPinned ? "pinned" : null, r.isArchived ? "archived" : null,
        r.roomType === "Private" ? "private" : null].filter(Boolean);
      const label = [r.displayName, ...flags, unread ? `${unread} unread` : null].filter(Boolean).join(", ");
      return h("li", {}, h("a", {
        href: `#/room/${r.roomId}`, "aria-label": label,
        "aria-current": this.current === r.roomId ? "page" : null,
      }, h("span", {}, r.roomType === "Private" ? h("span", { "aria-hidden": "true" }, "@ ") : null, r.displayName,
        r.isPinned ? h("span", { class: "flag", "aria-hidden": "true" }, " 📌") : null,
        r.isArchived ? h("span", { class: "flag", "aria-hidden": "true" }, " (archived)") : null),
      unread ? h("span", { class: "unread" }, String(unread)) : null));
    }));
    const total = [...this.rooms.values()].reduce((n, r) => n + (r.unreadMessageCount || 0), 0);
    document.title = total ? `(${total}) Confab` : "Confab";
  }

  /**
   * The address says what is shown: `#/room/ID` (timeline), `…/issues`, `…/meetings`,
   * `…/message/MID` (a linked message), `#/settings`, `#/admin`, `#/join/CODE`.
   */
  async route(reload = false) {
    const hash = location.hash;
    const join = hash.match(/^#\/join\/([A-Za-z0-9_-]+)/);
    if (join) return this.joinByLink(join[1]);
    const page = hash.match(/^#\/(settings|admin)/);
    if (page) return this.showPage(page[1]);
    this.showPage(null);
    const m = hash.match(/^#\/room\/(\d+)(?:\/(issues|meetings|settings)|\/message\/(\d+))?/);
    let id = m ? Number(m[1]) : null;
    const view = (m && m[2]) || "timeline";
    const focus = m && m[3] ? Number(m[3]) : null;
    if (!this.rooms.has(id)) id = this.rooms.size ? [...this.rooms.keys()][0] : null;
    const roomChanged = id !== this.current;
    if (!roomChanged && !reload && view === this.view && !focus) return;
    this.current = id;
    this.view = view;
    this.drawRooms();
    this.drawTabs();
    if (id === null) {
      this.title.textContent = "No rooms yet";
      this.timeline.show([]);
      this.showView(null);
      return;
    }
    const room = this.rooms.get(id);
    this.title.textContent = room.displayName;
    this.drawRoomTools(room);
    this.voiceBar.roomShown(id);
    if (roomChanged || reload || focus) {
      if (this.thread) this.closeThread();
      this.drawMembers();
      await this.loadTimeline(id, focus, roomChanged ? room.unreadMessageCount || 0 : 0);
      if (this.current !== id) return;
    }
    if (view === "issues") this.showView(new IssueBoard(this, id));
    else if (view === "meetings") this.showView(new MeetingList(this, id));
    else if (view === "settings") this.showView(new RoomSettings(this, id));
    else this.showView(null);
  }

  drawRoomTools(room) {
    this.pinButton.textContent = room.isPinned ? "Unpin room" : "Pin room";
    this.pinButton.setAttribute("aria-pressed", String(Boolean(room.isPinned)));
    this.leaveButton.hidden = room.roomType === "Private";
  }

  /** The timeline's newest page, or the pages around a linked message. */
  async loadTimeline(id, focus, unread) {
    this.timeline.loader = (cursor, direction) => api.history(id, PAGE, cursor, direction);
    if (focus) {
      const [before, after] = await Promise.all([
        api.history(id, PAGE / 2, focus + 1, "backward"), api.history(id, PAGE / 2, focus, "forward"),
      ]);
      if (this.current !== id) return;
      this.timeline.show([...before.messages, ...after.messages], {
        hasOlder: before.messages.length >= PAGE / 2, hasNewer: after.messages.length >= PAGE / 2,
      });
      if (!this.timeline.reveal(focus)) this.notice("That message is gone (deleted, or not in this room).");
      return;
    }
    const { messages } = await api.history(id, PAGE);
    if (this.current !== id) return;
    this.timeline.show(messages, { hasOlder: messages.length >= PAGE, unread });
    this.markRead(messages[messages.length - 1]);
  }

  jumpToNewest() {
    if (this.current !== null) this.loadTimeline(this.current, null, 0);
  }

  /** The room's other views (board, meetings, settings) take the timeline's place. */
  showView(view) {
    this.roomView = view;
    const timeline = !view;
    for (const el of [this.timeline.list, this.typingLine, this.uploads, this.composer]) el.hidden = !timeline;
    this.viewHost.hidden = timeline;
    replace(this.viewHost, view ? view.node : null);
    if (view) {
      view.load().catch((e) => {
        replace(this.viewHost, h("p", { class: "error", role: "alert" }, e.message));
      });
    }
  }

  drawTabs() {
    const id = this.current;
    const tab = (view, label) => h("li", {}, h("a", {
      href: view === "timeline" ? `#/room/${id}` : `#/room/${id}/${view}`,
      "aria-current": this.view === view ? "page" : null,
    }, label));
    const room = this.rooms.get(id);
    replace(this.tabs, id === null ? null : [
      tab("timeline", "Messages"), tab("issues", "Issues"), tab("meetings", "Meetings"),
      room && (room.isModerator || this.isAdmin()) ? tab("settings", "Room settings") : null,
    ]);
  }

  isAdmin() {
    return Boolean(this.users.get(this.userId)?.isAdmin);
  }

  /** Settings and administration take the room's place. */
  showPage(name) {
    if (!name) {
      if (this.page) {
        this.page = null;
        this.main.hidden = false;
        this.pageHost.hidden = true;
        replace(this.pageHost);
      }
      return;
    }
    this.current = null;
    this.page = name === "admin" ? new AdminPage(this) : new SettingsPage(this);
    this.main.hidden = true;
    this.drawRooms();
    replace(this.pageHost, this.page.node);
    this.pageHost.hidden = false;
    this.page.load().catch((e) => replace(this.pageHost, h("p", { class: "error", role: "alert" }, e.message)));
  }

  /** A short message for everyone (screen readers too), gone after a while. */
  notice(text) {
    this.noticeLine.textContent = text;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => { this.noticeLine.textContent = ""; }, 5000);
  }

  async copyLink(m, button) {
    const link = `${location.origin}/#/room/${m.roomId}/message/${m.messageId}`;
    try {
      await navigator.clipboard.writeText(link);
      this.notice("Link copied");
    } catch {
      this.notice(`Link: ${link}`);
    }
    if (button) button.focus();
  }

  markRead(message) {
    if (!message || document.hidden || message.userId === this.userId || message.messageId === this.lastMarked) return;
    this.lastMarked = message.messageId;
    api.markRead(message.messageId).catch(() => {});
  }

  async send(text) {
    if (this.current === null) return;
    const { message } = await api.send(this.current, text);
    this.timeline.add(message);
  }

  /** Files as a new message: the message first, then its files with a progress bar each
   * (cancel deletes the message again). */
  async sendFiles(files) {
    if (this.current === null || !files.length) return;
    const box = this.composer.querySelector("textarea");
    const text = box.value.trim() || files.map((f) => f.name).join(", ");
    box.value = "";
    const bar = h("progress", { max: 100, value: 0, "aria-label": `Uploading ${files.map((f) => f.name).join(", ")}` });
    const status = h("span", {}, "0%");
    let message;
    let job;
    const cancel = h("button", { type: "button", class: "plain", onclick: () => job && job.cancel() }, "Cancel");
    const row = h("li", {}, h("span", {}, files.map((f) => f.name).join(", ")), bar, status, cancel);
    this.uploads.append(row);
    try {
      ({ message } = await api.send(this.current, text));
      this.timeline.add(message);
      job = upload(message.messageId, files, (loaded, total) => {
        const pct = total ? Math.round((loaded / total) * 100) : 0;
        bar.value = pct;
        status.textContent = `${pct}%`;
      });
      await job.promise;
      row.remove();
    } catch (e) {
      if (message) api.remove(message.messageId).catch(() => {});
      cancel.remove();
      status.textContent = e.message;
      status.setAttribute("role", "alert");
      setTimeout(() => row.remove(), 5000);
    }
  }

  sendTyping() {
    const now = Date.now();
    if (this.current === null || now - this.lastTypingSent < 3000) return;
    this.lastTypingSent = now;
    this.events.send({ type: "Typing", roomId: this.current });
  }

  showTyping() {
    const names = [...this.typing.entries()]
      .filter(([, t]) => t.roomId === this.current && Date.now() - t.at < 5000)
      .map(([userId]) => this.timeline.name(userId));
    this.typingLine.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  onEvent(type, data) {
    switch (type) {
      case "TextMessagesCreated":
      case "TextMessagesUpdated":
        for (const m of data.messages || []) {
          if (this.thread) this.thread.timeline.add(m);
          if (this.roomView && this.roomView.onMessage) this.roomView.onMessage(m);
          if (m.roomId === this.current) {
            this.timeline.add(m);
            if (type === "TextMessagesCreated") {
              this.typing.delete(m.userId);
              this.showTyping();
              this.markRead(m);
            }
          }
          if (type === "TextMessagesCreated" && document.hidden && m.userId !== this.userId) this.notify(m);
        }
        break;
      case "TextMessageDeleted":
        if (data.roomId === this.current) this.timeline.remove(data.messageId);
        if (this.roomView && this.roomView.onDeleted) this.roomView.onDeleted(data.messageId);
        if (this.thread) {
          if (this.thread.parent === data.messageId) this.closeThread();
          else this.thread.timeline.remove(data.messageId);
        }
        break;
      case "RoomCreated":
      case "RoomUpdated":
        if (data.room) {
          this.rooms.set(data.room.roomId, data.room);
          this.drawRooms();
          if (data.room.roomId === this.current) {
            this.title.textContent = data.room.displayName;
            this.drawRoomTools(data.room);
          }
        }
        break;
      case "RoomDeleted":
        this.rooms.delete(data.roomId);
        if (data.roomId === this.current) this.route(true);
        else this.drawRooms();
        break;
      case "VoiceKey":
      case "VoiceParticipantJoined":
      case "VoiceParticipantLeft":
      case "VoiceTalking":
      case "VoiceRejoin":
        this.voiceBar.onEvent(type, data);
        break;
      case "MessagesRead":
        if (data.roomId === this.current) this.timeline.addReceipts(data.messageId, data.readTimestamps || []);
        if (this.thread) this.thread.timeline.addReceipts(data.messageId, data.readTimestamps || []);
        break;
      case "RoomPermissionsChanged":
        if (this.roomView && this.roomView.onPermissionsChanged) this.roomView.onPermissionsChanged(data);
        break;
      case "UserTyping":
        this.typing.set(data.userId, { roomId: data.roomId, at: Date.now() });
        this.showTyping();
        setTimeout(() => this.showTyping(), 5100);
        break;
      case "UserPresenceChanged": {
        const u = this.users.get(data.userId);
        if (u) {
          u.presence = data.presence;
          u.statusText = data.statusText;
        }
        this.drawMembers();
        break;
      }
      default:
    }
  }

  async askNotifications() {
    const result = await enableNotifications();
    this.notifyButton.hidden = true;
    this.notice(result);
  }

  notify(m) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const room = this.rooms.get(m.roomId);
    new Notification(`${this.timeline.name(m.userId)} in ${room ? room.displayName : "Confab"}`, { body: m.text.slice(0, 140) });
  }

  async logout() {
    await this.voiceBar.leave();
    this.events.close();
    await api.logout().catch(() => {});
    this.loggedOut();
  }

  loggedOut() {
    window.removeEventListener("hashchange", this.onHash);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.voiceBar.stop();
    this.events.close();
    showLogin();
  }
}

function showLogin() {
  replace(root, loginView((userId) => start(userId)));
}

function start(userId) {
  const app = new App(userId);
  replace(root, app.node);
}

api.status().then((s) => start(s.userId), () => showLogin());
