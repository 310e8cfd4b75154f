// Search results above the timeline: each hit names its room (a link), its author and a
// snippet with the matched words in <mark> (the server's UTF-16 ranges), all as text.
import { api } from "../api.mjs";
import { h, replace } from "../dom.mjs";

/** A snippet with its highlighted ranges (UTF-16 offsets) in <mark>. */
function highlighted(snippet, ranges) {
  const out = [];
  let at = 0;
  for (const [start, end] of ranges || []) {
    if (start < at || end > snippet.length) continue;
    out.push(snippet.slice(at, start), h("mark", {}, snippet.slice(start, end)));
    at = end;
  }
  out.push(snippet.slice(at));
  return h("span", {}, out);
}

export class SearchResults {
  constructor(app) {
    this.app = app;
    this.node = h("section", { class: "results", "aria-label": "Search results", hidden: true });
  }

  async run(q) {
    if (!q.trim()) return this.close();
    try {
      const { results } = await api.search(q);
      replace(this.node,
        h("h3", {}, `${results.length} result${results.length === 1 ? "" : "s"} for “${q}”`),
        h("ul", {}, results.map((r) => h("li", {},
          h("a", { href: `#/room/${r.roomId}/message/${r.parentMessageId || r.messageId}` },
            this.app.rooms.get(r.roomId)?.displayName || `room ${r.roomId}`),
          " · ", this.app.timeline.name(r.authorId), ": ", highlighted(r.snippet, r.highlights)))),
        h("button", { type: "button", class: "plain", onclick: () => this.close() }, "Close search"));
    } catch (e) {
      replace(this.node, h("p", { class: "error", role: "alert" }, e.message));
    }
    this.node.hidden = false;
    return undefined;
  }

  /** An error for the area above the timeline (a failed leave or join link). */
  error(text) {
    replace(this.node, h("p", { class: "error", role: "alert" }, text));
    this.node.hidden = false;
  }

  close() {
    this.node.hidden = true;
    replace(this.node);
  }
}
