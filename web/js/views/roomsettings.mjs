// A room's settings, for its moderators and administrators: name, join link, who may leave;
// members (add, remove, appoint moderators); and the permission editor for the room and for
// one member (docs/api.md "Permissions": administrators set flags either way, moderators may
// only take away what the administrator allows — the server says so when they try).
import { api } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { Feedback } from "./feedback.mjs";

const CHOICES = [["", "Default"], ["true", "Allowed"], ["false", "Denied"]];
const flagLabel = (f) => f.replace(/^ui/, "ui ").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();

/** What a level says about a flag: true/false when set there, null when it inherits. */
function levelValue(settings, flag) {
  if (!settings) return null;
  if (settings.setByAdmin && flag in settings.setByAdmin) return settings.setByAdmin[flag];
  if ((settings.deniedByModerator || []).includes(flag)) return false;
  return null;
}

export class RoomSettings {
  constructor(app, roomId) {
    this.app = app;
    this.roomId = roomId;
    this.feedback = new Feedback();
    ({ status: this.status, error: this.error } = this.feedback);
    this.general = h("section", { "aria-label": "Room" });
    this.members = h("section", { "aria-label": "Room members" });
    this.perms = h("section", { "aria-label": "Permissions" });
    this.subject = "";
    this.node = h("div", { class: "settings" }, h("h3", {}, "Room settings"), this.error, this.status,
      this.general, this.members, this.perms);
  }

  run(done, fn) {
    return this.feedback.run(done, fn);
  }

  async load() {
    this.drawGeneral();
    await this.drawMembers();
    await this.drawPermissions();
  }

  drawGeneral() {
    const room = this.app.rooms.get(this.roomId) || {};
    const name = h("input", { "aria-label": "New room name", value: room.displayName || "", maxlength: 128 });
    const rename = h("form", { class: "row" }, name, h("button", { type: "submit" }, "Rename room"));
    rename.addEventListener("submit", (e) => {
      e.preventDefault();
      this.run("Renamed", () => api.updateRoom(this.roomId, { displayName: name.value.trim() }));
    });
    const toggle = (label, field, on) => h("label", { class: "check" },
      h("input", { type: "checkbox", checked: on ? true : null,
        onchange: (e) => this.run(`${label}: ${e.target.checked ? "on" : "off"}`, async () => {
          const { room: r } = await api.updateRoom(this.roomId, { [field]: e.target.checked });
          this.app.rooms.set(r.roomId, r);
          this.drawGeneral();
        }) }), ` ${label}`);
    const link = room.joinCode && room.joinByLink !== false
      ? `${location.origin}/#/join/${room.joinCode}` : null;
    replace(this.general, h("h4", {}, "Room"), rename,
      toggle("Join by link", "joinByLink", Boolean(room.joinCode)),
      link ? h("p", {}, "Join link: ", h("code", {}, link), " ",
        h("button", { type: "button", class: "plain", onclick: () => this.run("A new join link; the old one stops working", async () => {
          const { room: r } = await api.updateRoom(this.roomId, { renewJoinLink: true });
          this.app.rooms.set(r.roomId, r);
          this.drawGeneral();
        }) }, "Renew join link")) : null,
      toggle("Members may leave", "membersMayLeave", room.membersMayLeave !== false),
      toggle("Add new users automatically", "autoAddNewUsers", Boolean(room.autoAddNewUsers)),
      toggle("Archived", "isArchived", Boolean(room.isArchived)));
  }

  async drawMembers() {
    const { members } = await api.members(this.roomId);
    const inRoom = new Set(members.map((m) => m.userId));
    const others = [...this.app.users.values()].filter((u) => !inRoom.has(u.userId) && u.status !== "Suspended");
    const pick = h("select", { "aria-label": "User to add" },
      others.map((u) => h("option", { value: u.userId }, u.displayName || u.userName)));
    const add = others.length
      ? h("form", { class: "row" }, pick, h("button", { type: "submit" }, "Add member"))
      : h("p", {}, "Everyone is a member already.");
    if (others.length) add.addEventListener("submit", (e) => {
      e.preventDefault();
      const id = Number(pick.value);
      if (id) this.run(`Added ${this.app.timeline.name(id)}`, async () => {
        await api.addMember(this.roomId, id);
        await this.drawMembers();
      });
    });
    replace(this.members, h("h4", {}, `Members (${members.length})`), add,
      h("ul", {}, members.map((m) => {
        const name = this.app.timeline.name(m.userId);
        return h("li", { class: "row" }, h("span", {}, name, m.isModerator ? " · moderator" : ""),
          h("button", { type: "button", class: "plain", onclick: () => this.run(
            m.isModerator ? `${name} is no longer a moderator` : `${name} is a moderator`, async () => {
              await api.setModerator(this.roomId, m.userId, !m.isModerator);
              await this.drawMembers();
            }) }, m.isModerator ? `Remove ${name} as moderator` : `Make ${name} moderator`),
          m.userId === this.app.userId ? null : h("button", { type: "button", class: "plain", onclick: () => this.run(
            `Removed ${name}`, async () => {
              await api.removeMember(this.roomId, m.userId);
              await this.drawMembers();
            }) }, `Remove ${name}`));
      })));
    this.memberIds = members.map((m) => m.userId);
  }

  /** One table: each flag at the room level and for the chosen member, and the result. */
  async drawPermissions() {
    const subject = Number(this.subject) || this.app.userId;
    const { roomPermissions: p } = await api.roomPermissions(this.roomId, subject);
    const who = h("select", { "aria-label": "Member whose permissions to edit" },
      h("option", { value: "" }, "(room level only)"),
      (this.memberIds || []).map((id) => h("option", { value: id, selected: String(id) === this.subject ? true : null },
        this.app.timeline.name(id))));
    who.addEventListener("change", () => {
      this.subject = who.value;
      this.drawPermissions().catch((e) => { this.error.textContent = e.message; });
    });
    const choice = (label, value, userId, flag) => {
      const sel = h("select", { "aria-label": label },
        CHOICES.map(([v, text]) => h("option", { value: v, selected: String(value ?? "") === v ? true : null }, text)));
      sel.addEventListener("change", () => this.run(`${flagLabel(flag)}: ${sel.selectedOptions[0].textContent}`, async () => {
        await api.setRoomPermissions(this.roomId, userId, { [flag]: sel.value === "" ? null : sel.value === "true" });
        await this.drawPermissions();
      }).then((ok) => { if (!ok) this.drawPermissions(); }));
      return sel;
    };
    const flags = Object.keys(p.permissions || {}).sort();
    const member = Number(this.subject) || null;
    replace(this.perms, h("h4", {}, "Permissions"), h("label", {}, "Member ", who),
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Permission"), h("th", { scope: "col" }, "Room"),
          member ? h("th", { scope: "col" }, this.app.timeline.name(member)) : null,
          h("th", { scope: "col" }, member ? "Result" : "Yours"))),
        h("tbody", {}, flags.map((f) => h("tr", {},
          h("th", { scope: "row" }, flagLabel(f)),
          h("td", {}, choice(`${flagLabel(f)} in this room`, levelValue(p.roomSettings, f), null, f)),
          member ? h("td", {}, choice(`${flagLabel(f)} for ${this.app.timeline.name(member)}`, levelValue(p.userSettings, f), member, f)) : null,
          h("td", {}, p.permissions[f] ? "yes" : "no"))))));
  }

  onPermissionsChanged() {
    this.drawPermissions().catch(() => {});
  }
}
