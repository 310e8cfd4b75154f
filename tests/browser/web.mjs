// Confab Web in headless Chromium, driven as two people would: log in, chat live, type,
// search, survive a hostile message, log out. Usage:
//   node web.mjs HOST:PORT ROOM_NAME HOSTILE_TEXT SCREENSHOT_DIR
// Users alice and bob (passwords NAME-password-123) are members of ROOM_NAME.
// Prints one JSON line of findings; exits non-zero on a failed step.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

// axe-core, evaluated in the page through the DevTools protocol (the page's own CSP
// rightly refuses injected scripts).
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const config = JSON.parse(process.argv[2]);
const { server, shots, ids } = config;
const roomName = config.room;
const base = `https://${server}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = { steps: [], axe: {} };
const step = (name) => out.steps.push(name);
/** Serious and critical accessibility violations of the page as it is now. */
const scan = async (p, view) => {
  await p.evaluate(axeSource);
  const found = await p.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  out.axe[view] = found;
};
try {
  const page = async (user, password = `${user}-password-123`) => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const p = await context.newPage();
    p.on("pageerror", (e) => { (out.pageErrors ||= []).push(`${user}: ${e.message}`); });
    p.on("dialog", (d) => { out.dialogs = (out.dialogs || 0) + 1; d.dismiss(); });
    const response = await p.goto(base);
    out.csp = response.headers()["content-security-policy"] || null;
    await p.getByRole("button", { name: "Log in" }).waitFor();
    if (user === "alice") await scan(p, "login");
    await p.getByLabel("User name").fill(user);
    await p.getByLabel("Password").fill(password);
    await p.getByRole("button", { name: "Log in" }).click();
    await p.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: new RegExp(`^${roomName}`) }).click();
    return p;
  };
  const alice = await page("alice");
  const bob = await page("bob");
  step("both logged in and opened the room");
  await alice.screenshot({ path: `${shots}/timeline.png` });

  // Live: alice sends, bob sees it; Shift+Enter is a new line.
  const box = alice.getByRole("textbox", { name: "Message" });
  await box.fill("first line");
  await box.press("Shift+Enter");
  await box.type("second line");
  await box.press("Enter");
  await bob.getByRole("article").filter({ hasText: "second line" }).waitFor({ timeout: 5000 });
  out.multiline = await bob.getByRole("article").filter({ hasText: "second line" }).innerText();
  step("a message went live from alice to bob");
  await scan(bob, "timeline");

  // Typing: bob types, alice is told.
  await bob.getByRole("textbox", { name: "Message" }).type("hel");
  await alice.getByText("bob is typing").waitFor({ timeout: 5000 });
  step("alice saw bob typing");
  await bob.getByRole("textbox", { name: "Message" }).press("Enter");
  await alice.getByRole("article").filter({ has: alice.locator(".text", { hasText: /^hel$/ }) })
    .waitFor({ timeout: 5000 });

  // The hostile message is shown as text and runs nothing.
  await bob.getByRole("article").filter({ hasText: "<script>" }).first().waitFor({ timeout: 5000 });
  out.hostileShown = await bob.getByRole("article").filter({ hasText: "<script>" }).first().innerText();
  out.pwned = await bob.evaluate(() => window.__pwned === undefined ? null : window.__pwned);
  out.scriptsInTimeline = await bob.locator(".timeline script, .timeline img, .timeline iframe").count();
  out.javascriptLinks = await bob.locator('a[href^="javascript:"]').count();
  out.safeLinks = await bob.locator('.timeline a[href^="https://example.org"]').count();
  step("the hostile message rendered as text");

  // Search.
  // The index follows history within about a second: search again until it has it.
  const search = bob.getByRole("searchbox", { name: "Search" });
  await search.fill("second");
  const found = bob.getByRole("region", { name: "Search results" }).getByText("line").first();
  for (let attempt = 0; ; attempt++) {
    await search.press("Enter");
    try {
      await found.waitFor({ timeout: 500 });
      break;
    } catch (e) {
      if (attempt >= 10) throw e;
    }
  }
  out.searchMarks = await bob.locator(".results mark").allInnerTexts();
  await bob.screenshot({ path: `${shots}/search.png` });
  await scan(bob, "search");
  step("bob found the message by search");

  // Files: alice attaches an image; a progress bar shows; bob sees its thumbnail inline.
  await alice.evaluate(() => {
    window.__progressSeen = false;
    new MutationObserver(() => {
      if (document.querySelector(".uploads progress")) window.__progressSeen = true;
    }).observe(document.body, { subtree: true, childList: true });
  });
  await alice.getByLabel("Attach files").setInputFiles(config.image);
  const thumb = bob.locator('.timeline article img[alt="photo.png"]');
  await thumb.waitFor({ timeout: 10000 });
  await bob.waitForFunction(() => {
    const img = document.querySelector('.timeline article img[alt="photo.png"]');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 10000 });
  out.thumbnailWidth = await thumb.evaluate((img) => img.naturalWidth);
  out.progressSeen = await alice.evaluate(() => window.__progressSeen);
  out.downloadHref = await bob.locator('.timeline article a[download="photo.png"]').getAttribute("href");
  await bob.screenshot({ path: `${shots}/files.png` });
  step("an image went up with a progress bar and showed as a thumbnail");

  // Presence: bob opens the members panel and sees alice online.
  await bob.getByRole("button", { name: "Members" }).click();
  const members = bob.getByRole("complementary", { name: "Members" });
  await members.getByText("alice — online").waitFor({ timeout: 5000 });
  step("bob saw alice online");
  await scan(bob, "members");

  // React, comment, edit (Up), delete — each seen live by alice.
  const aliceMessage = (p) => p.getByRole("article").filter({ hasText: "second line" });
  await aliceMessage(bob).hover();
  await aliceMessage(bob).getByRole("button", { name: "React 👍" }).click();
  await aliceMessage(alice).getByRole("button", { name: "👍 1" }).waitFor({ timeout: 5000 });
  step("a reaction went live");
  await aliceMessage(bob).hover();
  await aliceMessage(bob).getByRole("button", { name: "Comment" }).click();
  const comments = bob.getByRole("complementary", { name: "Comments" });
  await comments.getByRole("textbox", { name: "Comment" }).fill("a comment from bob");
  await comments.getByRole("textbox", { name: "Comment" }).press("Enter");
  await comments.getByRole("article").filter({ hasText: "a comment from bob" }).waitFor({ timeout: 5000 });
  await aliceMessage(alice).getByRole("button", { name: "Comments (1)" }).waitFor({ timeout: 5000 });
  await bob.screenshot({ path: `${shots}/comments.png` });
  await scan(bob, "comments");
  step("a comment went live");
  await comments.getByRole("button", { name: "Close comments" }).click();
  out.daySeparators = await bob.locator(".timeline [role=separator]").count();

  // Bob makes a room of his own, then leaves it.
  await bob.getByRole("textbox", { name: "Room name" }).fill("Bob's corner");
  await bob.getByRole("button", { name: "Create room" }).click();
  const corner = bob.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: /^Bob's corner/ });
  await corner.waitFor({ timeout: 5000 });
  await bob.getByRole("heading", { name: "Bob's corner" }).waitFor({ timeout: 5000 });
  await bob.getByRole("button", { name: "Leave room" }).click();
  await bob.getByRole("button", { name: "Confirm: leave room" }).click();
  await corner.waitFor({ state: "detached", timeout: 5000 });
  await bob.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: new RegExp(`^${roomName}`) }).click();
  step("bob made a room and left it");
  const bobBox = bob.getByRole("textbox", { name: "Message" });
  await bobBox.click();
  await bobBox.press("ArrowUp");
  const editBox = bob.getByRole("textbox", { name: "Edit message" });
  await editBox.fill("hello there, edited");
  await editBox.press("Enter");
  await alice.getByRole("article").filter({ hasText: "hello there, edited" }).waitFor({ timeout: 5000 });
  step("an edit went live");
  const bobMessage = bob.getByRole("article").filter({ hasText: "hello there, edited" });
  await bobMessage.hover();
  await bobMessage.getByRole("button", { name: "Delete" }).click();
  await alice.getByRole("article").filter({ hasText: "hello there, edited" }).waitFor({ state: "detached", timeout: 5000 });
  step("a delete went live");

  // The administrator removes mallory from the room: her room link goes at once.
  const mallory = await page("mallory");
  const admin = await page("admin", config.adminPassword);
  const adminCall = (method, path, body) => admin.evaluate(async ([method, path, body]) => {
    const r = await fetch(`/api/v1${path}`, {
      method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    return r.status;
  }, [method, path, body]);
  out.removeStatus = await adminCall("DELETE", `/rooms/${config.roomId}/members/${ids.mallory}`, undefined);
  await mallory.getByRole("navigation", { name: "Rooms" })
    .getByRole("link", { name: new RegExp(`^${roomName}`) }).waitFor({ state: "detached", timeout: 5000 });
  step("a removed member's room disappeared live");

  // Alice leaves: bob sees her offline within a minute.
  await bob.getByRole("button", { name: "Members" }).click();
  await members.getByText("alice — online").waitFor({ timeout: 5000 });
  const offlineSince = Date.now();
  await alice.getByRole("button", { name: "Log out" }).click();
  await alice.getByRole("button", { name: "Log in" }).waitFor({ timeout: 5000 });
  await alice.screenshot({ path: `${shots}/login.png` });
  await alice.reload();
  await alice.getByRole("button", { name: "Log in" }).waitFor({ timeout: 5000 });
  step("alice logged out and stays out");
  await members.getByText("alice — offline").waitFor({ timeout: 60000 });
  out.offlineAfterMs = Date.now() - offlineSince;
  step("bob saw alice offline");

  // Suspended: bob's page goes back to the login form.
  out.suspendStatus = await adminCall("POST", `/users/${ids.bob}/suspend`, {});
  await bob.getByRole("button", { name: "Log in" }).waitFor({ timeout: 10000 });
  step("a suspended user's page returned to the login form");
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
