// Voice between Confab Web in headless Chromium (fake microphones: Chromium's beep) and
// `confab voice` (UDP): alice and carol join the room's voice channel in their pages (each
// hears the other's Opus), then the CLI joins as bob, talks for a few seconds and reports
// what it heard. Usage: node voice.mjs CONFIG where CONFIG is JSON {server, room, shots,
// cli: {bin, args, env}}. Prints one JSON line.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const config = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
         "--autoplay-policy=no-user-gesture-required"],
});
const out = { steps: [] };
const step = (name) => out.steps.push(name);

/** Runs the CLI to the end; resolves to its parsed JSON output. */
const runCli = () => new Promise((resolve, reject) => {
  const child = spawn(config.cli.bin, config.cli.args, { env: { ...process.env, ...config.cli.env } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => { stdout += d; });
  child.stderr.on("data", (d) => { stderr += d; });
  child.on("close", (code) => {
    try {
      if (code !== 0) throw new Error(`exit ${code}`);
      resolve(JSON.parse(stdout));
    } catch (e) {
      reject(new Error(`confab voice: ${e.message}: ${stdout} ${stderr}`));
    }
  });
});

try {
  /** A page of `user` in the room with the "Voice" bar open after "Join voice". */
  const joined = async (user) => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, permissions: ["microphone"] });
    const page = await context.newPage();
    page.on("pageerror", (e) => { (out.pageErrors ||= []).push(`${user}: ${e.message}`); });
    await page.goto(`https://${config.server}/`);
    await page.getByLabel("User name").fill(user);
    await page.getByLabel("Password").fill(`${user}-password-123`);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: new RegExp(`^${config.room}`) }).click();
    await page.getByRole("button", { name: "Join voice" }).click();
    await page.getByRole("region", { name: "Voice" }).getByRole("button", { name: "Leave voice" }).waitFor({ timeout: 5000 });
    await page.waitForFunction(() => Number(document.querySelector(".voice-stats")?.dataset.sent) > 10,
      null, { timeout: 10000 });
    return page;
  };
  const stats = (p) => p.evaluate(() => {
    const d = document.querySelector(".voice-stats")?.dataset || {};
    return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, Number(v)]));
  });
  const page = await joined("alice");
  const carol = await joined("carol");
  const bar = page.getByRole("region", { name: "Voice" });
  step("alice and carol joined voice in their browsers and their microphones are being sent");

  const cli = runCli();
  // While bob talks, alice's page shows him talking.
  await bar.getByText("bob — talking").waitFor({ timeout: 10000 });
  out.talkingSeen = true;
  await page.screenshot({ path: `${config.shots}/voice.png` });
  await page.evaluate(axeSource);
  out.axe = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({ id: v.id, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  out.cli = await cli;
  step("confab voice talked and listened");
  await page.waitForTimeout(500);
  out.browser = await stats(page);
  out.carol = await stats(carol);
  await carol.getByRole("button", { name: "Leave voice" }).click();

  // Mute stops sending; unmute starts again.
  await bar.getByRole("button", { name: "Mute" }).click();
  await page.waitForTimeout(300);
  const before = (await stats(page)).sent;
  await page.waitForTimeout(1000);
  out.sentWhileMuted = (await stats(page)).sent - before;
  await bar.getByRole("button", { name: "Mute" }).click();
  await page.waitForFunction((n) => Number(document.querySelector(".voice-stats")?.dataset.sent) > n + 10,
    before, { timeout: 5000 });
  step("mute stopped sending, unmute resumed it");

  await bar.getByRole("button", { name: "Leave voice" }).click();
  await page.getByRole("button", { name: "Join voice" }).waitFor({ timeout: 5000 });
  step("alice left voice");
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
