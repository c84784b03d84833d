// The composer's rules, pure: how long a message may be and when Enter sends it.
import { utf8Length } from '../socketchat.js';

/**
 * What the length counter shows for `text` against a limit of `max` UTF-8 bytes (the server's
 * Welcome.limits.max_text_bytes): `{bytes, max, over, near, label}`; `near` from 90 % on.
 */
export function textBudget(text, max) {
  const bytes = utf8Length(text);
  return { bytes, max, over: bytes > max, near: bytes >= max * 0.9, label: `${bytes} / ${max}` };
}

/** Whether a message can be sent: something besides whitespace, within the limit. */
export function canSend(text, max) {
  return text.trim() !== '' && utf8Length(text) <= max;
}

/**
 * Whether a keydown in the composer sends the message: Enter does, with or without Ctrl/Cmd;
 * Shift+Enter inserts a new line, and an Enter that confirms an IME composition (keyCode 229
 * in Safari) does neither.
 * @param {{key: string, shiftKey: boolean, isComposing: boolean, keyCode?: number}} e
 */
export function isSendKey(e) {
  return e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229;
}

/** Least time between two Typing{active:true} of one room (peers expire one after 6 s). */
export const TYPING_REFRESH_MS = 3000;

/**
 * In how many ms a Typing{active:true} for `room` may go out (0: now), given the room and time
 * of the last one: at most one per `refreshMs` per room, whatever was sent in between.
 */
export function typingWaitMs({ room, now, lastRoom, lastSentAt, refreshMs = TYPING_REFRESH_MS }) {
  if (lastRoom !== room) return 0;
  return Math.max(0, lastSentAt + refreshMs - now);
}
