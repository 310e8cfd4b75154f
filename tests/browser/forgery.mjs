// Headless Chromium against two Confab servers on loopback: the victim (whose session
// cookie the browser holds) and another origin of the same site serving attacker/.
// Usage: node forgery.mjs VICTIM_HOST:PORT ATTACKER_HOST:PORT SESSION_ID ROOM_ID
// Prints one JSON line: what each origin could do with the cookie.
import { chromium } from "playwright-core";

const [victim, attacker, session, room] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const [vhost] = victim.split(":");
  await context.addCookies([{
    name: "VirolaUserSessionId", value: session, domain: vhost, path: "/",
    secure: true, httpOnly: true, sameSite: "Strict",
  }]);
  const page = await context.newPage();
  const out = {};

  // Control: the server's own page uses the cookie for a post and the event socket.
  await page.goto(`https://${victim}/index.html`);
  out.own = await page.evaluate(async (room) => {
    const r = await fetch(`/api/v1/rooms/${room}/messages`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ content: "posted by the server's own page" }),
    });
    const ws = await new Promise((resolve) => {
      const s = new WebSocket(`wss://${location.host}/api/v1/events`);
      s.onopen = () => { s.close(); resolve("open"); };
      s.onerror = () => resolve("error");
    });
    return { post: r.status, ws };
  }, room);

  // The attack from another port.
  await page.goto(`https://${attacker}/attack.html?target=${victim}&room=${room}`);
  await page.waitForFunction(() => document.title !== "pending", null, { timeout: 10000 });
  out.attack = JSON.parse(await page.title());
  const [response] = await Promise.all([
    page.waitForNavigation({ timeout: 10000 }),
    page.evaluate(() => document.getElementById("form").submit()),
  ]);
  out.form = { status: response ? response.status() : null, body: (await page.textContent("body")) || "" };
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
