// Finds web links in message text. Pure: the message list turns the pieces into text nodes
// and <a> elements (never HTML).

// A URL starts with http:// or https:// not glued to a preceding letter, digit or underscore,
// and runs until whitespace or a character that cannot be in one unescaped (<>"`{}|\^).
const URL_CANDIDATE = /(?<![\p{L}\p{N}_])https?:\/\/[^\s<>"`{}|\\^]+/giu;
// Punctuation that ends a sentence more often than a URL: "see https://x.org/a." links /a.
const TRAILING = new Set(['.', ',', ':', ';', '!', '?', "'", '*', '_', '~']);
const CLOSERS = { ')': '(', ']': '[' };

/** Drops trailing punctuation, and closing brackets that have no opening one in the URL. */
function trimUrl(candidate) {
  let end = candidate.length;
  for (;;) {
    const last = candidate[end - 1];
    if (TRAILING.has(last)) {
      end -= 1;
      continue;
    }
    const opener = CLOSERS[last];
    if (opener) {
      const body = candidate.slice(0, end);
      const opens = body.split(opener).length - 1;
      const closes = body.split(last).length - 1;
      if (closes > opens) {
        end -= 1;
        continue;
      }
    }
    return candidate.slice(0, end);
  }
}

/** The absolute http(s) URL `text` names, or null when it is not one with a host. */
function httpHref(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') return null;
  return url.href;
}

/**
 * Splits message text into pieces, in order: `{text}` for plain text, `{text, href}` for an
 * http or https link (`text` as written, `href` the parsed URL). Joining every piece's `text`
 * gives back the input exactly.
 * @param {string} text
 * @returns {Array<{text: string, href?: string}>}
 */
export function splitLinks(text) {
  const pieces = [];
  let plainFrom = 0;
  for (const match of text.matchAll(URL_CANDIDATE)) {
    const linkText = trimUrl(match[0]);
    const href = httpHref(linkText);
    if (href === null) continue;
    if (match.index > plainFrom) pieces.push({ text: text.slice(plainFrom, match.index) });
    pieces.push({ text: linkText, href });
    plainFrom = match.index + linkText.length;
  }
  if (plainFrom < text.length) pieces.push({ text: text.slice(plainFrom) });
  return pieces;
}
