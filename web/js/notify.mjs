// Notifications: the browser's permission, then — when the server offers a VAPID key — a
// service worker (/sw.js) and a Web Push subscription registered with the server, so
// messages reach the user while no Confab tab is open (docs/push.md).
import { api } from "./api.mjs";

/** Whether to offer the "Enable notifications" button. */
export function notificationsWanted() {
  return "Notification" in window && Notification.permission === "default";
}

function base64UrlBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/** Asks for permission and subscribes to Web Push; returns what happened, in words. */
export async function enableNotifications() {
  if (!("Notification" in window)) return "This browser has no notifications.";
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return "Notifications stay off (not allowed in this browser).";
  return subscribePush();
}

/** Registers the service worker and the push subscription (again: both are idempotent). */
export async function subscribePush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    return "Notifications on while Confab is open (this browser has no Web Push).";
  }
  try {
    const { publicKey } = await api.vapidKey();
    const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.getSubscription()
      || await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64UrlBytes(publicKey) });
    await api.registerPush(subscription.toJSON());
    return "Notifications on, also while Confab is closed.";
  } catch (e) {
    return `Notifications on while Confab is open (push: ${e.message}).`;
  }
}
