// Files attached to messages (PROTOCOL.md § 8.5), pure: where they are uploaded and served,
// which are shown as images, how their size reads, and what a composer may send.

/** Types the server serves inline (recognised by their bytes): shown as images. */
export const INLINE_IMAGE_TYPES = Object.freeze(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

/** Whether an attachment is shown as an image (never SVG: the server serves it as a download). */
export function isInlineImage(contentType) {
  return INLINE_IMAGE_TYPES.includes(String(contentType).toLowerCase());
}

/** `POST` target of an upload named `name`. */
export function uploadPath(name) {
  return `/api/uploads?${new URLSearchParams({ name })}`;
}

/** Where an attachment's bytes are served (`GET`). */
export function attachmentPath(id) {
  return `/api/uploads/${encodeURIComponent(String(id))}`;
}

/** "512 B", "1.5 KB", "12 KB", "3.4 MB" (1 KB = 1024 B). */
export function formatSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let n = bytes;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${n} B`;
  const shown = n < 10 ? Math.round(n * 10) / 10 : Math.round(n);
  return `${shown} ${units[unit]}`;
}

/**
 * A file name the server takes (1..=255 bytes, no control characters, no / or \), made from a
 * browser's File name: a pasted image may have none, and a path part is dropped.
 */
export function uploadName(name, contentType = '') {
  let base = String(name || '').split(/[\\/]/).pop();
  base = base.replace(/\p{Cc}/gu, '').trim();
  if (base === '' || base === '.' || base === '..') {
    const ext = { 'image/png': '.png', 'image/jpeg': '.jpg', 'image/gif': '.gif', 'image/webp': '.webp' }[contentType] || '';
    base = `pasted${ext}`;
  }
  const bytes = new TextEncoder().encode(base);
  if (bytes.length <= 255) return base;
  // Cut at a character boundary within 255 bytes.
  let out = '';
  let used = 0;
  for (const ch of base) {
    const n = new TextEncoder().encode(ch).length;
    if (used + n > 255) break;
    out += ch;
    used += n;
  }
  return out;
}

/**
 * What the composer may send: text within the limit and not blank, or blank text with at
 * least one uploaded file; never while a file is still uploading or failed and not removed.
 * @param {{text: string, bytes: number, max: number, ready: number, busy: number, failed?: number}} s
 */
export function composerSendable({ text, bytes, max, ready, busy, failed = 0 }) {
  if (busy > 0 || failed > 0 || bytes > max) return false;
  return text.trim() !== '' || ready > 0;
}
