// Run by tests/security.rs in headless Chromium: the attacks of the same-site forgery
// finding, from a page on another port. Results go to document.title as JSON.
const q = new URLSearchParams(location.search);
const target = q.get("target");
const room = q.get("room");
const results = {};
const ws = new WebSocket(`wss://${target}/api/v1/events`);
ws.onopen = () => { results.ws = "open"; };
ws.onmessage = () => { results.wsMessage = true; };
ws.onerror = () => { results.ws = results.ws || "error"; };
ws.onclose = (e) => { results.wsClosedCode = e.code; };
// A "simple" cross-origin request: sent with the cookie, its answer unreadable.
fetch(`https://${target}/api/v1/rooms/${room}/messages`, {
  method: "POST",
  mode: "no-cors",
  credentials: "include",
  headers: { "Content-Type": "text/plain" },
  body: JSON.stringify({ content: "forged by fetch" }),
}).then(() => { results.fetch = "sent"; }, (e) => { results.fetch = "failed: " + e; });
setTimeout(() => { document.title = JSON.stringify(results); }, 2000);
// The form is submitted by the driver afterwards (it navigates away from this page).
const form = document.getElementById("form");
form.action = `https://${target}/api/v1/rooms/${room}/messages`;
const field = document.getElementById("field");
// text/plain sends `name=value`: together, valid JSON.
field.name = '{"content":"forged by a form';
field.value = ' (name=value)"}';
