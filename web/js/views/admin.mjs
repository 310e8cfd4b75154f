// Administration: users (create, suspend, reactivate, reset a password, make or unmake an
// administrator), the server-wide default permissions, and the server's health (refreshed
// every 5 s while shown). The server enforces all of it; the page only asks.
import { api } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { Feedback } from "./feedback.mjs";

const flagLabel = (f) => f.replace(/^ui/, "ui ").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
const bytes = (n) => (n >= 1073741824 ? `${(n / 1073741824).toFixed(1)} GiB`
  : n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${Math.round((n || 0) / 1024)} KiB`);

export class AdminPage {
  constructor(app) {
    this.app = app;
    this.feedback = new Feedback();
    ({ status: this.status, error: this.error } = this.feedback);
    this.users = h("section", { "aria-label": "Users" });
    this.perms = h("section", { "aria-label": "Default permissions" });
    this.health = h("section", { "aria-label": "Server health" });
    this.node = h("div", { class: "settings" }, h("h2", {}, "Administration"), this.status, this.error,
      this.health, this.users, this.perms);
  }

  run(done, fn) {
    return this.feedback.run(done, fn);
  }

  async load() {
    await Promise.all([this.drawUsers(), this.drawPermissions(), this.drawHealth()]);
    this.timer = setInterval(() => {
      if (!this.node.isConnected) clearInterval(this.timer);
      else this.drawHealth().catch(() => {});
    }, 5000);
  }

  async drawHealth() {
    const s = await api.health();
    const row = (k, v) => [h("dt", {}, k), h("dd", {}, String(v))];
    replace(this.health, h("h3", {}, "Server health"),
      h("dl", { class: "health" },
        row("Status", s.reason ? `${s.status}: ${s.reason}` : s.status),
        row("Version", `${s.serverVersion} (schema ${s.schemaVersion})`),
        row("Up for", `${Math.floor(s.uptimeSeconds / 3600)} h ${Math.floor((s.uptimeSeconds % 3600) / 60)} min`),
        row("Connected", `${s.connectedUsers} users, ${s.connectedSessions} sessions`),
        row("Users", s.userCount), row("Active rooms", s.activeRooms),
        row("Storage", `${bytes(s.storageBytes)} used, ${bytes(s.freeDiskBytes)} free`),
        row("Writes", `${s.durableWrites} durable in ${s.fsyncs} fsyncs, ${s.failedWrites} failed`),
        row("Memory", bytes(s.residentMemoryBytes)),
        s.push ? row("Push", `${s.push.sent} sent, ${s.push.queued} queued, ${s.push.failed} failed`) : null,
        s.voice ? row("Voice", `${s.voice.channels} channels, ${s.voice.participants} participants`) : null));
  }

  async drawUsers() {
    const { users } = await api.users();
    this.app.users = new Map(users.map((u) => [u.userId, { ...this.app.users.get(u.userId), ...u }]));
    const name = h("input", { "aria-label": "New user name", placeholder: "user name", maxlength: 64, required: true });
    const display = h("input", { "aria-label": "New user's display name", placeholder: "Display name", maxlength: 128 });
    const admin = h("input", { type: "checkbox", id: "new-admin" });
    const form = h("form", { class: "row" }, name, display,
      h("label", { for: "new-admin", class: "check" }, admin, " administrator"),
      h("button", { type: "submit" }, "Create user"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.run("", async () => {
        const r = await api.createUser({
          userName: name.value.trim(), displayName: display.value.trim() || undefined, isAdmin: admin.checked,
        });
        name.value = "";
        display.value = "";
        await this.drawUsers();
        return `Created ${r.user.userName}; first password: ${r.password}`;
      });
    });
    const button = (label, fn) => h("button", { type: "button", class: "plain", onclick: () => this.run("", async () => {
      const said = await fn();
      await this.drawUsers();
      return said;
    }) }, label);
    replace(this.users, h("h3", {}, `Users (${users.length})`), form,
      h("table", {},
        h("thead", {}, h("tr", {}, ["User", "Display name", "Role", "Status", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, users.map((u) => {
          const who = u.userName;
          const self = u.userId === this.app.userId;
          const suspended = u.status === "Suspended";
          return h("tr", { "data-user-id": u.userId },
            h("th", { scope: "row" }, who), h("td", {}, u.displayName || ""),
            h("td", {}, u.isAdmin ? "administrator" : "member"), h("td", {}, u.status || "Active"),
            h("td", {}, h("div", { class: "row" },
              self ? null : suspended
                ? button(`Reactivate ${who}`, async () => { await api.reactivate(u.userId); return `${who} reactivated`; })
                : button(`Suspend ${who}`, async () => { await api.suspend(u.userId); return `${who} suspended`; }),
              self ? null : button(`Reset password of ${who}`, async () => {
                const r = await api.resetPassword(u.userId);
                return `New password for ${who}: ${r.password}`;
              }),
              button(u.isAdmin ? `Remove ${who} as administrator` : `Make ${who} administrator`, async () => {
                await api.setAdmin(u.userId, !u.isAdmin);
                return u.isAdmin ? `${who} is no longer an administrator` : `${who} is an administrator`;
              }))));
        }))));
  }

  async drawPermissions() {
    const { permissions } = await api.permissions();
    replace(this.perms, h("h3", {}, "Default permissions of members"),
      h("p", {}, "Rooms and members may be set apart in each room's settings."),
      h("ul", { class: "flags" }, Object.keys(permissions).sort().map((f) => h("li", {},
        h("label", { class: "check" }, h("input", {
          type: "checkbox", checked: permissions[f] ? true : null,
          onchange: (e) => this.run(`${flagLabel(f)}: ${e.target.checked ? "on" : "off"}`,
            () => api.setPermissions({ [f]: e.target.checked })),
        }), ` ${flagLabel(f)}`)))));
  }
}
