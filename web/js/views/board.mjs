// A room's issues as a board: one column per status, a card per issue; drag a card (or use
// its status menu, for keyboards) to change its status — the server decides whether you may
// (docs/api.md, canChangePropertiesOfUnrelatedIssues) and the card goes back if not. Also the
// form that creates an issue, and a filter by assignee. Live: the page passes message events.
import { api } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { track } from "./tracked.mjs";

export const STATUSES = [
  ["Backlog", "Backlog"], ["ToDo", "To do"], ["InProgress", "In progress"],
  ["ToVerify", "To verify"], ["Done", "Done"], ["Declined", "Declined"],
];
const TYPES = ["Task", "Bug", "FeatureRequest", "Story", "Epic", "Subtask", "MergeRequest"];
const PRIORITIES = ["Normal", "Blocker", "Critical", "High", "Low", "Trivial"];
const PRIORITY_RANK = Object.fromEntries(PRIORITIES.map((p, i) => [p, p === "Normal" ? 3.5 : i]));

const words = (v) => v.replace(/([a-z])([A-Z])/g, "$1 $2");
const title = (text) => (text.split("\n")[0] || "(untitled)").slice(0, 200);

function select(label, values, value, display = words) {
  return h("select", { "aria-label": label },
    values.map((v) => h("option", { value: v, selected: v === value ? true : null }, display(v))));
}

export class IssueBoard {
  constructor(app, roomId) {
    this.app = app;
    this.roomId = roomId;
    this.issues = new Map();
    this.assignee = "";
    this.error = h("p", { class: "error", role: "alert" });
    this.columns = h("div", { class: "columns" });
    this.filter = h("select", { "aria-label": "Assignee filter" });
    this.filter.addEventListener("change", () => {
      this.assignee = this.filter.value;
      this.draw();
    });
    this.node = h("section", { class: "board", "aria-label": "Issues" },
      h("div", { class: "board-head" }, h("h3", {}, "Issues"), this.filter),
      this.createForm(), this.error, this.columns);
  }

  createForm() {
    const text = h("input", { "aria-label": "Issue title", placeholder: "New issue", maxlength: 500, required: true });
    const type = select("Issue type", TYPES, "Task");
    const status = select("Issue status", STATUSES.map(([s]) => s), "ToDo",
      (s) => STATUSES.find(([v]) => v === s)[1]);
    const priority = select("Issue priority", PRIORITIES, "Normal");
    this.assigneePicker = h("select", { "aria-label": "Assignees", multiple: true, size: 2 });
    const form = h("form", { class: "new-issue" }, text, type, status, priority, this.assigneePicker,
      h("button", { type: "submit" }, "Create issue"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!text.value.trim()) return;
      try {
        const { message } = await api.sendIssue(this.roomId, text.value.trim(), priority.value, {
          type: type.value,
          status: status.value,
          assignees: [...this.assigneePicker.selectedOptions].map((o) => Number(o.value)),
        });
        text.value = "";
        this.error.textContent = "";
        this.onMessage(message);
      } catch (err) {
        this.error.textContent = `Cannot create the issue: ${err.message}`;
      }
    });
    return form;
  }

  async load() {
    const [{ issues }, { members }] = await Promise.all([
      api.issues(this.roomId), api.members(this.roomId).catch(() => ({ members: [] })),
    ]);
    this.members = members.map((m) => m.userId);
    const people = this.members.map((id) => [String(id), this.app.timeline.name(id)]);
    replace(this.filter, h("option", { value: "" }, "Everyone's issues"),
      people.map(([id, name]) => h("option", { value: id }, `Assigned to ${name}`)));
    replace(this.assigneePicker, people.map(([id, name]) => h("option", { value: id }, name)));
    this.issues = new Map(issues.filter((m) => !m.parentMessageId).map((m) => [m.messageId, m]));
    this.draw();
  }

  /** A created or changed message (only this room's issues matter). */
  onMessage(m) {
    if (track(this.issues, this.roomId, "Issue", m)) this.draw();
  }

  onDeleted(messageId) {
    if (this.issues.delete(messageId)) this.draw();
  }

  async move(messageId, status) {
    const m = this.issues.get(messageId);
    if (!m || m.issueProperties.status === status) return;
    const before = m.issueProperties;
    m.issueProperties = { ...before, status };
    this.draw();
    try {
      const { message } = await api.setIssue(m, { ...before, status });
      this.error.textContent = "";
      this.onMessage(message);
    } catch (err) {
      m.issueProperties = before;
      this.error.textContent = `Cannot move “${title(m.text)}”: ${err.message}`;
      this.draw();
    }
  }

  draw() {
    const shown = [...this.issues.values()]
      .filter((m) => !this.assignee || m.issueProperties.assignees.includes(Number(this.assignee)))
      .sort((a, b) => (PRIORITY_RANK[a.priority] ?? 3.5) - (PRIORITY_RANK[b.priority] ?? 3.5)
        || a.createdUtc - b.createdUtc);
    replace(this.columns, STATUSES.map(([status, label]) => {
      const cards = shown.filter((m) => m.issueProperties.status === status);
      const list = h("ul", { "aria-label": label }, cards.map((m) => this.card(m)));
      const column = h("section", { class: "column", "aria-label": label, "data-status": status },
        h("h4", {}, `${label} (${cards.length})`), list);
      column.addEventListener("dragover", (e) => {
        if (e.dataTransfer.types.includes("application/x-confab-issue")) {
          e.preventDefault();
          column.classList.add("drop");
        }
      });
      column.addEventListener("dragleave", () => column.classList.remove("drop"));
      column.addEventListener("drop", (e) => {
        column.classList.remove("drop");
        const id = Number(e.dataTransfer.getData("application/x-confab-issue"));
        if (id) {
          e.preventDefault();
          this.move(id, status);
        }
      });
      return column;
    }));
  }

  card(m) {
    const p = m.issueProperties;
    const move = select(`Status of ${title(m.text)}`, STATUSES.map(([s]) => s), p.status,
      (s) => STATUSES.find(([v]) => v === s)[1]);
    move.addEventListener("change", () => this.move(m.messageId, move.value));
    const card = h("li", { class: "card", draggable: "true", "data-message-id": m.messageId },
      h("a", { href: `#/room/${m.roomId}/message/${m.messageId}`, class: "card-title" }, title(m.text)),
      h("div", { class: "card-meta" },
        h("span", { class: `tag ${p.type}` }, words(p.type)),
        m.priority && m.priority !== "Normal" ? h("span", { class: `tag priority ${m.priority}` }, m.priority) : null,
        p.assignees.length ? h("span", {}, `→ ${p.assignees.map((id) => this.app.timeline.name(id)).join(", ")}`) : null),
      move);
    card.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("application/x-confab-issue", String(m.messageId));
      e.dataTransfer.effectAllowed = "move";
    });
    return card;
  }
}
