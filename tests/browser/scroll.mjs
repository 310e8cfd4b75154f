// Scrolling a long room in Confab Web (headless Chromium): opens the room, then scrolls to
// the top again and again until its first message is on screen, then jumps back to the
// newest, and takes live messages at a full window. Measures each step (scroll → older page fetched, drawn and laid out), and the
// most articles and DOM elements the page ever held. Usage: node scroll.mjs CONFIG with
// CONFIG = JSON {server, user, password, room, expect (messages in the room)}. Prints JSON.
import { launch, run } from "./common.mjs";

const config = JSON.parse(process.argv[2]);
const browser = await launch(["--enable-precise-memory-info"]);
const out = {};
await run(browser, out, async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => { (out.pageErrors ||= []).push(e.message); });
  await page.goto(`https://${config.server}/`);
  await page.getByLabel("User name").fill(config.user);
  await page.getByLabel("Password").fill(config.password);
  const opened = Date.now();
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: new RegExp(`^${config.room}`) }).click();
  await page.locator(".timeline article").first().waitFor();
  out.openMs = Date.now() - opened;

  // One step: scroll to the top, wait until the window moved (its first message changed)
  // and two frames were drawn. In the page, so the timing is the page's own.
  const step = () => page.evaluate(async () => {
    const list = document.querySelector(".timeline");
    const firstId = () => list.querySelector("article")?.dataset.messageId;
    const hasOlder = () => Boolean(list.firstElementChild?.matches("button.more"));
    const before = firstId();
    let scrollAt = 0;
    list.addEventListener("scroll", () => { scrollAt = scrollAt || performance.now(); });
    const fetchesBefore = performance.getEntriesByType("resource").length;
    const t0 = performance.now();
    list.scrollTop = 0;
    const deadline = t0 + 10000;
    while (firstId() === before && performance.now() < deadline) {
      if (!hasOlder()) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const domMs = performance.now() - t0;
    const fetch = performance.getEntriesByType("resource").slice(fetchesBefore)
      .find((e) => e.name.includes("/messages?"));
    // Layout of the new window, forced here so it is counted, then the next frame.
    list.getBoundingClientRect();
    void list.scrollHeight;
    const layoutMs = performance.now() - t0;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    return {
      // From the scroll to: its event, the page request's start and end, the new window.
      scrollEventMs: scrollAt ? scrollAt - t0 : 0,
      fetchStartMs: fetch ? fetch.startTime - t0 : 0,
      fetchEndMs: fetch ? fetch.responseEnd - t0 : 0,
      domMs,
      layoutMs,
      ms: performance.now() - t0,
      moved: firstId() !== before,
      articles: list.querySelectorAll("article").length,
      elements: document.getElementsByTagName("*").length,
      heap: performance.memory ? performance.memory.usedJSHeapSize : 0,
      first: Number(firstId()),
    };
  });
  // With "profile": the page's JavaScript is sampled while scrolling (DevTools protocol),
  // and the functions with the most self time are reported.
  const cdp = config.profile ? await context.newCDPSession(page) : null;
  if (cdp) {
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
    await cdp.send("Profiler.start");
  }
  const steps = [];
  for (let i = 0; i < 1000; i++) {
    const s = await step();
    if (!s.moved) break;
    steps.push(s);
  }
  if (cdp) {
    const { profile } = await cdp.send("Profiler.stop");
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const dt = profile.timeDeltas;
    profile.samples.forEach((id, i) => {
      const f = byId.get(id).callFrame;
      const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
      self.set(key, (self.get(key) || 0) + (dt[i] || 0) / 1000);
    });
    out.profileSelfMs = Object.fromEntries([...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)
      .map(([k, v]) => [k, Math.round(v)]));
  }
  const pcts = (field) => {
    const times = steps.map((s) => s[field]).sort((a, b) => a - b);
    const pct = (p) => (times.length ? Math.round(times[Math.min(times.length - 1, Math.floor(p * times.length))] * 10) / 10 : 0);
    return { p50: pct(0.5), p99: pct(0.99), max: pct(1) };
  };
  out.pages = steps.length;
  // stepMs: scroll → older page fetched, drawn, laid out and two frames painted;
  // domMs: until the new window is in the DOM; layoutMs: and laid out.
  out.stepMs = pcts("ms");
  out.domMs = pcts("domMs");
  out.layoutMs = pcts("layoutMs");
  out.scrollEventMs = pcts("scrollEventMs");
  out.fetchStartMs = pcts("fetchStartMs");
  out.fetchEndMs = pcts("fetchEndMs");
  out.totalMs = Math.round(steps.reduce((n, s) => n + s.ms, 0));
  out.maxArticles = Math.max(0, ...steps.map((s) => s.articles));
  out.maxElements = Math.max(0, ...steps.map((s) => s.elements));
  out.maxHeapBytes = Math.max(0, ...steps.map((s) => s.heap));
  // How much of a step is the page fetch (resource timing of each /messages request).
  const fetches = await page.evaluate(() => performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/messages?")).map((e) => e.duration).sort((a, b) => a - b));
  out.fetchMs = { p50: Math.round(fetches[Math.floor(fetches.length / 2)] * 10) / 10, count: fetches.length };
  out.reachedOldest = await page.evaluate(() => {
    const list = document.querySelector(".timeline");
    return !list.firstElementChild?.matches("button.more") && Boolean(list.querySelector("article"));
  });
  out.oldestText = await page.locator(".timeline article .text").first().innerText();
  // Back to the newest: one click.
  const t0 = Date.now();
  await page.getByRole("button", { name: "Jump to newest" }).click();
  await page.waitForFunction(() => !document.querySelector(".timeline button.more:last-child"));
  out.jumpToNewestMs = Date.now() - t0;
  out.articlesAtNewest = await page.locator(".timeline article").count();

  // Live messages at a full window: two older pages (300 messages, still the newest), back
  // to the bottom, then three messages of ours. The oldest leave; the head of the list is
  // made again (the "Load older" button, the new first message's day).
  await step();
  await step();
  const shape = () => page.evaluate(() => {
    const list = document.querySelector(".timeline");
    const articles = list.querySelectorAll("article");
    const first = articles[0];
    return {
      articles: articles.length,
      firstId: Number(first.dataset.messageId),
      lastText: articles[articles.length - 1].querySelector(".text")?.textContent,
      head: [...list.children].slice(0, 3).map((e) => [e.tagName.toLowerCase(), ...e.classList].join(".")),
      beforeFirst: first.previousElementSibling?.className,
      doubledSeparators: list.querySelectorAll(".day + .day, .day + .unread-marker + .day").length,
      atBottom: list.scrollHeight - list.scrollTop - list.clientHeight < 40,
    };
  });
  await page.evaluate(() => { const list = document.querySelector(".timeline"); list.scrollTop = list.scrollHeight; });
  out.liveBefore = await shape();
  // Messages whose articles were taken out of the list while the live messages came, but
  // for the live ones (an article is replaced when its message changes): only the oldest
  // three (a redraw of the window would take all 300 out and put them back).
  await page.evaluate(() => {
    window.articlesRemoved = new Map();
    new MutationObserver((records) => {
      for (const r of records) {
        for (const n of r.removedNodes) if (n.tagName === "ARTICLE") window.articlesRemoved.set(n.dataset.messageId, n);
      }
    }).observe(document.querySelector(".timeline"), { childList: true });
  });
  const box = page.getByRole("textbox", { name: "Message" });
  for (let i = 0; i < 3; i++) {
    await box.fill(`live ${i}`);
    await box.press("Enter");
    await page.locator(".timeline article .text", { hasText: `live ${i}` }).waitFor();
  }
  out.liveAfter = await shape();
  out.liveArticlesRemoved = await page.evaluate(() => [...window.articlesRemoved.values()]
    .filter((n) => !n.querySelector(".text")?.textContent.startsWith("live ")).length);
});
