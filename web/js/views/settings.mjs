// Your own settings: display name, status line, avatar, password, and the places you are
// logged in (end the others). Each form says what happened in a status line.
import { api } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { Feedback } from "./feedback.mjs";

export class SettingsPage {
  constructor(app) {
    this.app = app;
    this.feedback = new Feedback();
    ({ status: this.status, error: this.error } = this.feedback);
    this.sessions = h("section", { "aria-label": "Sessions" });
    this.node = h("div", { class: "settings" }, h("h2", {}, "Your settings"), this.status, this.error,
      this.profileForm(), this.avatarForm(), this.passwordForm(), this.sessions);
  }

  run(done, fn) {
    return this.feedback.run(done, fn);
  }

  me() {
    return this.app.users.get(this.app.userId) || {};
  }

  profileForm() {
    const me = this.me();
    const name = h("input", { id: "display-name", value: me.displayName || me.userName || "", maxlength: 128, required: true });
    const statusText = h("input", { id: "status-text", value: me.statusText || "", maxlength: 140, placeholder: "In a meeting until 3" });
    const form = h("form", { class: "stack", "aria-label": "Profile" }, h("h3", {}, "Profile"),
      h("label", { for: "display-name" }, "Display name"), name,
      h("label", { for: "status-text" }, "Status"), statusText,
      h("button", { type: "submit" }, "Save profile"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.run("Profile saved", async () => {
        const { user } = await api.updateMe(this.app.userId, { displayName: name.value.trim() });
        await api.setStatus(statusText.value.trim());
        this.app.users.set(user.userId, { ...this.me(), ...user, statusText: statusText.value.trim() });
        this.app.meName.textContent = user.displayName || user.userName;
      });
    });
    return form;
  }

  avatarForm() {
    const preview = h("img", { src: `/api/v1/users/${this.app.userId}/avatar.jpg`, alt: "Your avatar", class: "avatar-big" });
    const file = h("input", { type: "file", id: "avatar-file", accept: "image/png,image/jpeg,image/gif,image/webp" });
    file.addEventListener("change", () => {
      const [f] = file.files;
      if (!f) return;
      this.run("Avatar changed", async () => {
        await api.setAvatar(this.app.userId, f);
        preview.src = `/api/v1/users/${this.app.userId}/avatar.jpg?t=${Date.now()}`;
      });
    });
    return h("section", { class: "stack", "aria-label": "Avatar" }, h("h3", {}, "Avatar"), preview,
      h("label", { for: "avatar-file" }, "New avatar (PNG, JPEG, GIF or WebP, at most 1 MiB)"), file);
  }

  passwordForm() {
    const old = h("input", { type: "password", id: "old-password", autocomplete: "current-password", required: true });
    const next = h("input", { type: "password", id: "new-password", autocomplete: "new-password", minlength: 8, required: true });
    const form = h("form", { class: "stack", "aria-label": "Password" }, h("h3", {}, "Password"),
      h("label", { for: "old-password" }, "Current password"), old,
      h("label", { for: "new-password" }, "New password"), next,
      h("button", { type: "submit" }, "Change password"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.run("Password changed; your other sessions were logged out", async () => {
        await api.changePassword(this.app.userId, old.value, next.value);
        old.value = "";
        next.value = "";
        await this.drawSessions();
      });
    });
    return form;
  }

  async load() {
    await this.drawSessions();
  }

  async drawSessions() {
    const { sessions } = await api.sessions();
    const when = (ms) => new Date(ms).toLocaleString();
    replace(this.sessions, h("h3", {}, "Where you are logged in"),
      h("ul", {}, sessions.map((s) => h("li", {},
        `${s.client || "unknown client"} from ${s.address || "?"}, last seen ${when(s.lastSeenUtc)}`,
        s.current ? h("strong", {}, " (this page)") : null))),
      sessions.length > 1 ? h("button", { type: "button", class: "plain", onclick: () => this.run(
        "Logged out everywhere else", async () => {
          await api.endOtherSessions();
          await this.drawSessions();
        }) }, "Log out other sessions") : null);
  }
}
