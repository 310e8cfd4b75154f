// Confab Web in headless Chromium, driven as two people would: log in, chat live, type,
// search, survive a hostile message, log out. Usage:
//   node web.mjs HOST:PORT ROOM_NAME HOSTILE_TEXT SCREENSHOT_DIR
// Users alice and bob (passwords NAME-password-123) are members of ROOM_NAME.
// Prints one JSON line of findings; exits non-zero on a failed step.
import { chromium } from "playwright-core";

const [server, roomName, hostile, shots] = process.argv.slice(2);
const base = `https://${server}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = { steps: [] };
const step = (name) => out.steps.push(name);
try {
  const page = async (user) => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const p = await context.newPage();
    p.on("pageerror", (e) => { (out.pageErrors ||= []).push(`${user}: ${e.message}`); });
    p.on("dialog", (d) => { out.dialogs = (out.dialogs || 0) + 1; d.dismiss(); });
    const response = await p.goto(base);
    out.csp = response.headers()["content-security-policy"] || null;
    await p.getByLabel("User name").fill(user);
    await p.getByLabel("Password").fill(`${user}-password-123`);
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

  // Typing: bob types, alice is told.
  await bob.getByRole("textbox", { name: "Message" }).type("hel");
  await alice.getByText("bob is typing").waitFor({ timeout: 5000 });
  step("alice saw bob typing");
  await bob.getByRole("textbox", { name: "Message" }).press("Enter");
  await alice.getByRole("article").filter({ hasText: /^bob.*hel$/ }).waitFor({ timeout: 5000 });

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
  step("bob found the message by search");

  // Log out: back to the login form.
  await alice.getByRole("button", { name: "Log out" }).click();
  await alice.getByRole("button", { name: "Log in" }).waitFor({ timeout: 5000 });
  await alice.screenshot({ path: `${shots}/login.png` });
  await alice.reload();
  await alice.getByRole("button", { name: "Log in" }).waitFor({ timeout: 5000 });
  step("alice logged out and stays out");
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
