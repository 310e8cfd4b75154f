// Voice between Confab Web in headless Chromium (fake microphones: Chromium's beep) and
// `confab voice` (UDP): alice and carol join the room's voice channel in their pages (each
// hears the other's Opus), then the CLI joins as bob, talks for a few seconds and reports
// what it heard. Usage: node voice.mjs CONFIG where CONFIG is JSON {server, room, shots,
// cli: {bin, args, env}}. Prints one JSON line.
import { spawn } from "node:child_process";
import { axeViolations, launch, run } from "./common.mjs";

const config = JSON.parse(process.argv[2]);
const browser = await launch(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required"]);
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

await run(browser, out, async () => {
  /** A page of `user` in the room with the "Voice" bar open after "Join voice". */
  const joined = async (user, { worklet = false } = {}) => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, permissions: ["microphone"] });
    const page = await context.newPage();
    // As in a browser without MediaStreamTrackProcessor (Firefox, Safari): the page then
    // takes the microphone through its AudioWorklet.
    if (worklet) await page.addInitScript(() => { delete window.MediaStreamTrackProcessor; });
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
    return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, Number.isNaN(Number(v)) ? v : Number(v)]));
  });
  const page = await joined("alice");
  const carol = await joined("carol", { worklet: true });
  const bar = page.getByRole("region", { name: "Voice" });
  step("alice and carol joined voice in their browsers and their microphones are being sent");

  const cli = runCli();
  // While bob talks, alice's page shows him talking.
  await bar.getByText("bob — talking").waitFor({ timeout: 10000 });
  out.talkingSeen = true;
  await page.screenshot({ path: `${config.shots}/voice.png` });
  out.axe = await axeViolations(page);
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
});
