// The board and the meeting list each keep a room's top-level messages of one type, fed by
// the same live events: this is that bookkeeping, once.

/**
 * Applies a created or changed message to `kept` (messageId → message): kept when it is a
 * top-level message of `roomId` whose `messageType` is `type`, dropped when it no longer is.
 * Returns whether `kept` changed, so a chat message does not redraw a board.
 */
export function track(kept, roomId, type, m) {
  if (m.roomId !== roomId || m.parentMessageId) return false;
  if (m.messageType === type) {
    kept.set(m.messageId, m);
    return true;
  }
  return kept.delete(m.messageId);
}
