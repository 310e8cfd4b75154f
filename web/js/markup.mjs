// Confab's message markup, a small markdown subset rendered to DOM nodes (never to an
// HTML string, so no input can become markup or script): **bold**, *italic*, `code`,
// ```code blocks```, and http(s) links. Anything else is text.
import { h } from "./dom.mjs";

const INLINE = /(\*\*[^*\n]+\*\*|\*[^*\s][^*\n]*\*|`[^`\n]+`|https?:\/\/[^\s<>"']+)/g;

/** The link target if `text` is a safe http(s) URL, else null (never javascript: & co). */
export function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const t = m[0];
    if (t.startsWith("**")) out.push(h("strong", {}, t.slice(2, -2)));
    else if (t.startsWith("`")) out.push(h("code", {}, t.slice(1, -1)));
    else if (t.startsWith("*")) out.push(h("em", {}, t.slice(1, -1)));
    else {
      const href = safeUrl(t);
      out.push(href ? h("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, t) : t);
    }
    last = m.index + t.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** The nodes for a message's text. */
export function render(text) {
  const out = [];
  const parts = String(text).split("```");
  parts.forEach((part, i) => {
    if (i % 2 === 1 && i < parts.length - 1) {
      out.push(h("pre", {}, h("code", {}, part.replace(/^\n/, ""))));
    } else {
      const plain = i % 2 === 1 ? "```" + part : part;
      out.push(...inline(plain));
    }
  });
  return out;
}
