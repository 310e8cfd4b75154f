// Confab Web's service worker: shows Web Push notifications (the payload is
// {title, body, data: {roomId, …}}, docs/push.md) and opens the room when one is clicked.
self.addEventListener("push", (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    payload = {};
  }
  const data = payload.data || {};
  if (data.silent) {
    // A badge update (read elsewhere): nothing to show.
    if (self.navigator.setAppBadge && data.badge !== undefined) self.navigator.setAppBadge(Number(data.badge) || 0);
    return;
  }
  event.waitUntil(self.registration.showNotification(payload.title || "Confab", {
    body: payload.body || "",
    tag: data.roomId ? `room-${data.roomId}` : undefined,
    data,
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const roomId = Number(event.notification.data && event.notification.data.roomId);
  const url = roomId ? `/#/room/${roomId}` : "/";
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const w of windows) {
      if ("focus" in w) {
        await w.focus();
        if ("navigate" in w) await w.navigate(url);
        return;
      }
    }
    await self.clients.openWindow(url);
  })());
});
