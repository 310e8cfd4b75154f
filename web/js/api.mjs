// Every call to the server: REST under /api/v1 (the session cookie authenticates, so no
// secret is kept in the page's storage) and the event stream, reconnected with back-off.

export class ApiError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

export async function call(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, `The server cannot be reached (${e.message})`);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.errorText || response.statusText);
  return data;
}

export const api = {
  login: (userName, password) => call("POST", "/login", { userName, password }),
  logout: () => call("POST", "/logout", {}),
  status: () => call("GET", "/status"),
  users: () => call("GET", "/users"),
  rooms: () => call("GET", "/rooms"),
  /** A page of a room's messages (oldest first): the newest `limit` before `cursor` going
   * backward, or the oldest after it going forward. */
  history: (roomId, limit = 50, cursor = 0, direction = "backward") =>
    call("GET", `/rooms/${roomId}/messages?limit=${limit}&direction=${direction}${cursor ? `&cursor=${cursor}` : ""}`),
  sync: (cursor, limit) => call("GET", `/sync?cursor=${cursor}&limit=${limit}`),
  message: (messageId) => call("GET", `/messages/${messageId}`),
  send: (roomId, content) => call("POST", `/rooms/${roomId}/messages`, { content }),
  markRead: (messageId) => call("POST", `/messages/${messageId}/read`, {}),
  search: (q) => call("GET", `/search?q=${encodeURIComponent(q)}&limit=30`),
  edit: (messageId, content) => call("PUT", `/messages/${messageId}`, { content }),
  remove: (messageId) => call("DELETE", `/messages/${messageId}`),
  react: (messageId, emoji, add) => call("POST", `/messages/${messageId}/reactions`, { emoji, add }),
  comments: (messageId) => call("GET", `/messages/${messageId}/comments?limit=200`),
  comment: (messageId, content) => call("POST", `/messages/${messageId}/comments`, { content }),
  members: (roomId) => call("GET", `/rooms/${roomId}/members`),
  createRoom: (displayName) => call("POST", "/rooms", { displayName }),
  privateRoom: (userId) => call("POST", "/rooms", { roomType: "Private", members: [userId] }),
  pin: (roomId, isPinned) => call("PUT", `/rooms/${roomId}/pin`, { isPinned }),
  deleteFile: (attachmentId) => call("DELETE", `/attachments/${attachmentId}`),
  leave: (roomId) => call("POST", `/rooms/${roomId}/leave`, {}),
  join: (joinCode) => call("POST", "/rooms/join", { joinCode }),
  sendIssue: (roomId, content, priority, issueProperties) =>
    call("POST", `/rooms/${roomId}/messages`, { content, priority, messageType: "Issue", issueProperties }),
  /** Changes an issue's properties; the text is sent unchanged (what a non-author may do). */
  setIssue: (m, issueProperties) =>
    call("PUT", `/messages/${m.messageId}`, { content: m.text, messageType: "Issue", issueProperties }),
  issues: (roomId) => call("GET", `/issues?roomId=${roomId}&sort=priority&limit=1000`),
  sendMeeting: (roomId, content, meetingProperties) =>
    call("POST", `/rooms/${roomId}/messages`, { content, messageType: "Meeting", meetingProperties }),
  meetings: (roomId, from, to) => call("GET", `/meetings?roomId=${roomId}&from=${from}&to=${to}`),
  updateMe: (userId, fields) => call("PATCH", `/users/${userId}`, fields),
  changePassword: (userId, oldPassword, password) => call("POST", `/users/${userId}/password`, { oldPassword, password }),
  setStatus: (statusText) => call("PUT", "/presence", { statusText }),
  /** Uploads an avatar image (the bytes as the body). */
  setAvatar: async (userId, file) => {
    const r = await fetch(`/api/v1/users/${userId}/avatar.jpg`, { method: "PUT", body: file, credentials: "same-origin" });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new ApiError(r.status, data.errorText || r.statusText);
    return data;
  },
  sessions: () => call("GET", "/sessions"),
  endOtherSessions: () => call("DELETE", "/sessions?others=true"),
  // Room management (moderators, administrators)
  addMember: (roomId, userId) => call("POST", `/rooms/${roomId}/members`, { userId }),
  removeMember: (roomId, userId) => call("DELETE", `/rooms/${roomId}/members/${userId}`),
  setModerator: (roomId, userId, isModerator) => call("PUT", `/rooms/${roomId}/members/${userId}`, { isModerator }),
  updateRoom: (roomId, fields) => call("PATCH", `/rooms/${roomId}`, fields),
  roomPermissions: (roomId, userId) => call("GET", `/room-permissions/${roomId}${userId ? `?userId=${userId}` : ""}`),
  setRoomPermissions: (roomId, userId, permissions) =>
    call("PUT", `/room-permissions/${roomId}`, userId ? { userId, permissions } : { permissions }),
  // Administration
  createUser: (fields) => call("POST", "/users", fields),
  suspend: (userId) => call("POST", `/users/${userId}/suspend`, {}),
  reactivate: (userId) => call("POST", `/users/${userId}/reactivate`, {}),
  resetPassword: (userId) => call("POST", `/users/${userId}/password`, {}),
  setAdmin: (userId, isAdmin) => call("POST", `/users/${userId}/admin`, { isAdmin }),
  permissions: () => call("GET", "/permissions"),
  setPermissions: (permissions) => call("PUT", "/permissions", { permissions }),
  health: () => call("GET", "/server-health"),
  vapidKey: () => call("GET", "/push/vapid-public-key"),
  registerPush: (subscription) => call("POST", "/push/devices", { platform: "webpush", subscription }),
  joinVoice: (roomId, listenOnly) =>
    call("POST", `/rooms/${roomId}/voice`, { cipher: "aes-256-gcm", listenOnly }),
  leaveVoice: (roomId, participantId) =>
    call("DELETE", `/rooms/${roomId}/voice?participantId=${participantId}`),
  voiceParticipants: (roomId) => call("GET", `/rooms/${roomId}/voice`),
};

/**
 * Uploads files to a message (multipart, field `files`), reporting progress(loaded, total);
 * returns { promise, cancel }. XMLHttpRequest because fetch reports no upload progress.
 */
export function upload(messageId, files, progress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", `/api/v1/messages/${messageId}/attachments`);
    xhr.upload.onprogress = (e) => progress(e.loaded, e.total);
    xhr.onload = () => {
      let data = {};
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: the status says enough
      }
      if (xhr.status === 200) resolve(data);
      else reject(new ApiError(xhr.status, data.errorText || `Upload failed (${xhr.status})`));
    };
    xhr.onerror = () => reject(new ApiError(0, "The upload was interrupted"));
    xhr.onabort = () => reject(new ApiError(0, "Upload cancelled"));
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    xhr.send(form);
  });
  return { promise, cancel: () => xhr.abort() };
}

/**
 * The event stream: calls onEvent(type, data) for each event and onOpen() after each
 * (re)connection (the caller catches up then); reconnects with exponential back-off
 * (1 s doubling to 30 s, with jitter) until close(). Binary frames are voice packets
 * (docs/voice.md §6): they go to onBinary(ArrayBuffer) and out through sendBinary().
 */
export class Events {
  constructor(onEvent, onOpen) {
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.delay = 1000;
    this.closed = false;
    this.connect();
  }

  connect() {
    // readDeltas: read receipts come as small MessagesRead events, not whole messages.
    const ws = new WebSocket(`wss://${location.host}/api/v1/events?extensions=readDeltas`);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      this.delay = 1000;
      this.onOpen();
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") {
        if (this.onBinary) this.onBinary(e.data);
        return;
      }
      let event;
      try {
        event = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onEvent(event.type, event.data || {});
    };
    ws.onclose = (e) => {
      if (this.closed) return;
      if (this.onClose && this.onClose(e) === false) return;
      const wait = this.delay * (0.75 + Math.random() / 2);
      this.delay = Math.min(this.delay * 2, 30000);
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** Voice is best effort: dropped rather than queued behind a slow link (> 64 KiB). */
  sendBinary(bytes) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > 65536) return false;
    ws.send(bytes);
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}
