// Confab Web in headless Chromium, driven as a team would: alice, bob, mallory and the
// administrator in browser contexts of their own chat, type, search, share files, work the
// issue board, schedule a meeting, manage the room and the server, and survive a hostile
// message. Usage: node web.mjs CONFIG, with CONFIG the JSON {server, room, roomId, image,
// shots, adminPassword, ids: {alice, bob, mallory}} (passwords NAME-password-123).
// Prints one JSON line of findings; exits non-zero on a failed step.
import { axeViolations, launch, run } from "./common.mjs";

const config = JSON.parse(process.argv[2]);
const { server, shots, ids } = config;
const roomName = config.room;
const base = `https://${server}/`;
const browser = await launch();
const out = { steps: [], axe: {} };
const step = (name) => out.steps.push(name);
const scan = async (p, view) => {
  out.axe[view] = await axeViolations(p);
};
await run(browser, out, async () => {
  const page = async (user, password = `${user}-password-123`) => {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      permissions: ["clipboard-read", "clipboard-write", ...(user === "alice" ? ["notifications"] : [])],
    });
    const p = await context.newPage();
    // Keeps a handle on the page's WebSockets, so the test can cut the event stream.
    await p.addInitScript(() => {
      // Notifications the page shows are recorded (and still shown).
      window.__notified = [];
      if (window.Notification) {
        const NativeNotification = window.Notification;
        window.Notification = class extends NativeNotification {
          constructor(title, options) {
            super(title, options);
            window.__notified.push({ title, body: options && options.body });
          }
        };
      }
      const Native = window.WebSocket;
      window.__sockets = [];
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          window.__sockets.push(this);
        }
      };
    });
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
  const aliceMessage = (p) => p.getByRole("article").filter({ hasText: "second line" });
  await aliceMessage(alice).getByText("Seen by bob").waitFor({ timeout: 5000 });
  step("alice saw that bob read her message");

  // Bob's event stream drops; alice posts meanwhile; bob reconnects and has each message once.
  const historyFetches = () => bob.evaluate(() => performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/messages?")).length);
  const fetchesBefore = await historyFetches();
  await bob.evaluate(() => window.__sockets[window.__sockets.length - 1].close());
  for (const text of ["while you were away 1", "while you were away 2"]) {
    await box.fill(text);
    await box.press("Enter");
  }
  await bob.getByRole("article").filter({ hasText: "while you were away 2" }).waitFor({ timeout: 15000 });
  out.afterReconnect = await bob.getByRole("article").filter({ hasText: "while you were away" }).count();
  out.eventStreams = await bob.evaluate(() => window.__sockets.length);
  // Caught up from the sync log, not by reloading the room's history.
  out.historyReloadsOnReconnect = (await historyFetches()) - fetchesBefore;
  step("bob's page reconnected and caught up");

  // Alice allowed notifications: the page registered its service worker for Web Push.
  out.serviceWorker = await alice.evaluate(async () => {
    for (let i = 0; i < 50; i++) {
      const r = await navigator.serviceWorker.getRegistration("/");
      if (r && r.active) return r.active.scriptURL;
      await new Promise((done) => setTimeout(done, 100));
    }
    return null;
  });
  await scan(bob, "timeline");

  // Typing: bob types, alice is told.
  await bob.getByRole("textbox", { name: "Message" }).type("hel");
  await alice.getByText("bob is typing").waitFor({ timeout: 5000 });
  step("alice saw bob typing");
  // While alice's tab is hidden, bob's message shows a browser notification.
  await alice.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  });
  await bob.getByRole("textbox", { name: "Message" }).press("Enter");
  await alice.getByRole("article").filter({ has: alice.locator(".text", { hasText: /^hel$/ }) })
    .waitFor({ timeout: 5000 });
  await alice.waitForFunction(() => window.__notified.length > 0, null, { timeout: 5000 });
  out.notified = await alice.evaluate(() => window.__notified);
  await alice.evaluate(() => { delete document.hidden; });
  step("alice's hidden tab showed a notification");

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
  await alice.getByRole("button", { name: "Delete photo.png" }).click();
  await thumb.waitFor({ state: "detached", timeout: 5000 });
  step("alice deleted the file and it went from bob's page");

  // Presence: each opens the members panel and sees the other online.
  await bob.getByRole("button", { name: "Members" }).click();
  const members = bob.getByRole("complementary", { name: "Members" });
  await members.getByText("alice — online").waitFor({ timeout: 5000 });
  await alice.getByRole("button", { name: "Members" }).click();
  await alice.getByRole("complementary", { name: "Members" }).getByText("bob — online").waitFor({ timeout: 5000 });
  await alice.getByRole("button", { name: "Members" }).click();
  step("alice and bob saw each other online");
  await scan(bob, "members");

  // React, comment, edit (Up), delete — each seen live by alice.
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
  out.daySeparators = await bob.locator(".timeline .day").count();

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
  // A private chat: bob starts one with alice; it appears on both sides. Bob pins General.
  await bob.getByRole("combobox", { name: "Private chat with" }).selectOption(String(ids.alice));
  await bob.getByRole("heading", { name: "alice" }).waitFor({ timeout: 5000 });
  await alice.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: /^bob, private/ })
    .waitFor({ timeout: 5000 });
  await bob.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: new RegExp(`^${roomName}`) }).click();
  await bob.getByRole("button", { name: "Pin room" }).click();
  await bob.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: new RegExp(`^${roomName}, pinned`) })
    .waitFor({ timeout: 5000 });
  out.firstRoomOfBob = await bob.getByRole("navigation", { name: "Rooms" }).getByRole("link").first().getAttribute("aria-label");
  step("a private chat appeared on both sides and bob pinned the room");
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

  // A link to a message: bob copies it, alice opens it and lands on the message.
  await aliceMessage(bob).hover();
  await aliceMessage(bob).getByRole("button", { name: "Copy link" }).click();
  await bob.getByRole("status").filter({ hasText: "Link copied" }).waitFor({ timeout: 5000 });
  out.messageLink = await bob.evaluate(() => navigator.clipboard.readText());
  await alice.goto(out.messageLink);
  await alice.locator(".timeline article.highlight", { hasText: "second line" }).waitFor({ timeout: 5000 });
  step("a copied message link opened at the message");

  // Issues: alice files one on the board, bob drags it to "In progress", alice sees it move.
  const views = (p) => p.getByRole("navigation", { name: "Room views" });
  const board = (p) => p.getByRole("region", { name: "Issues" });
  const column = (p, name) => board(p).getByRole("region", { name, exact: true });
  await views(alice).getByRole("link", { name: "Issues" }).click();
  await board(alice).getByRole("textbox", { name: "Issue title" }).fill("Fix the login page");
  await board(alice).getByRole("combobox", { name: "Issue type" }).selectOption("Bug");
  await board(alice).getByRole("combobox", { name: "Issue priority" }).selectOption("High");
  await board(alice).getByRole("listbox", { name: "Assignees" }).selectOption(String(ids.bob));
  await board(alice).getByRole("button", { name: "Create issue" }).click();
  await column(alice, "To do").getByText("Fix the login page").waitFor({ timeout: 5000 });
  await views(bob).getByRole("link", { name: "Issues" }).click();
  const bobCard = (name) => column(bob, name).locator(".card", { hasText: "Fix the login page" });
  await bobCard("To do").waitFor({ timeout: 5000 });
  await bobCard("To do").dragTo(column(bob, "In progress"));
  await column(alice, "In progress").getByText("Fix the login page").waitFor({ timeout: 5000 });
  step("bob dragged alice's issue to In progress and alice saw it move");
  const filter = board(alice).getByRole("combobox", { name: "Assignee filter" });
  await filter.selectOption(String(ids.alice));
  out.cardsAssignedToAlice = await board(alice).locator(".card").count();
  await filter.selectOption(String(ids.bob));
  out.cardsAssignedToBob = await board(alice).locator(".card").count();
  await alice.screenshot({ path: `${shots}/board.png` });
  await scan(alice, "board");

  // Meetings: alice schedules one; it is listed under its day.
  await views(alice).getByRole("link", { name: "Meetings" }).click();
  const meetings = alice.getByRole("region", { name: "Meetings" });
  await meetings.getByRole("textbox", { name: "Meeting title" }).fill("Sprint planning");
  await meetings.getByRole("button", { name: "Schedule meeting" }).click();
  await meetings.locator(".meeting", { hasText: "Sprint planning" }).waitFor({ timeout: 5000 });
  out.meetingDays = await meetings.locator(".meeting-days h4").count();
  await alice.screenshot({ path: `${shots}/meetings.png` });
  await scan(alice, "meetings");
  step("alice scheduled a meeting");
  await views(alice).getByRole("link", { name: "Messages" }).click();

  // The administrator (the room's moderator) takes from bob the right to change others'
  // issues: his next drag is refused and the card stays.
  const admin = await page("admin", config.adminPassword);
  await views(admin).getByRole("link", { name: "Room settings" }).click();
  const perms = admin.getByRole("region", { name: "Permissions" });
  await perms.getByRole("combobox", { name: "Member whose permissions to edit" }).selectOption(String(ids.bob));
  const flag = perms.getByRole("combobox", { name: "can change properties of unrelated issues for bob" });
  await flag.selectOption("false");
  await admin.getByRole("status").filter({ hasText: "can change properties of unrelated issues: Denied" })
    .waitFor({ timeout: 5000 });
  await admin.screenshot({ path: `${shots}/room-settings.png` });
  await scan(admin, "roomSettings");
  await bobCard("In progress").dragTo(column(bob, "Done"));
  await board(bob).getByRole("alert").filter({ hasText: "Cannot move" }).waitFor({ timeout: 5000 });
  await bobCard("In progress").waitFor({ timeout: 5000 });
  out.refusedMove = await board(bob).getByRole("alert").innerText();
  step("a refused move put the card back");
  await views(bob).getByRole("link", { name: "Messages" }).click();

  // The administrator removes mallory from the room: her room link goes at once.
  const mallory = await page("mallory");
  out.unreadMarkers = await mallory.locator(".timeline .unread-marker").count();
  // Mallory finds a message of the room by search, until she is removed from it.
  const searchAs = async (p, q, expect) => {
    const box = p.getByRole("searchbox", { name: "Search" });
    await box.fill(q);
    for (let attempt = 0; ; attempt++) {
      await box.press("Enter");
      try {
        await p.getByRole("region", { name: "Search results" }).getByRole("heading", { name: expect }).waitFor({ timeout: 500 });
        return;
      } catch (e) {
        if (attempt >= 10) throw e;
      }
    }
  };
  await searchAs(mallory, "second", /^1 result/);
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
  await searchAs(mallory, "second", /^0 results/);
  step("after removal, search no longer finds the room's messages");

  // Mallory's own settings: a new display name.
  await mallory.getByRole("link", { name: /your settings/ }).click();
  await mallory.getByLabel("Display name").fill("Mallory M");
  await mallory.getByRole("button", { name: "Save profile" }).click();
  await mallory.getByRole("status").filter({ hasText: "Profile saved" }).waitFor({ timeout: 5000 });
  out.renamed = await mallory.locator("header .me .name").innerText();
  await mallory.screenshot({ path: `${shots}/settings.png` });
  await scan(mallory, "settings");
  step("mallory changed her display name");

  // Administration: a new user, the health page.
  await admin.getByRole("link", { name: "Administration" }).click();
  await admin.getByRole("textbox", { name: "New user name" }).fill("carol");
  await admin.getByRole("button", { name: "Create user" }).click();
  await admin.getByRole("status").filter({ hasText: "Created carol; first password:" }).waitFor({ timeout: 5000 });
  await admin.getByRole("region", { name: "Server health" }).getByText("Healthy").waitFor({ timeout: 5000 });
  await admin.screenshot({ path: `${shots}/admin.png` });
  await scan(admin, "admin");
  step("the administrator made a user and saw the server healthy");

  // At phone width: one column, still usable.
  await alice.setViewportSize({ width: 390, height: 844 });
  await alice.getByRole("textbox", { name: "Message" }).waitFor();
  out.phoneOverflow = await alice.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await alice.screenshot({ path: `${shots}/phone.png` });
  await scan(alice, "phone");
  await alice.setViewportSize({ width: 1280, height: 720 });
  // The dark theme (following the system): its contrast is scanned too.
  await alice.emulateMedia({ colorScheme: "dark" });
  await alice.screenshot({ path: `${shots}/dark.png` });
  await scan(alice, "dark");
  await alice.emulateMedia({ colorScheme: "light" });

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
  await admin.getByRole("button", { name: "Suspend bob" }).click();
  await admin.getByRole("status").filter({ hasText: "bob suspended" }).waitFor({ timeout: 5000 });
  await bob.getByRole("button", { name: "Log in" }).waitFor({ timeout: 10000 });
  step("a suspended user's page returned to the login form");
});
