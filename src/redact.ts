// Keeping secrets out of what vmdib prints: credentials in URLs and private keys, in one text or a stream of lines.

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"`]+@/gi;
const KEY_BEGIN = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
const KEY_END = /-----END [A-Z0-9 ]*PRIVATE KEY-----/;
// A key block's body: base64, PEM headers ("Proc-Type: 4,ENCRYPTED"), whitespace, or newlines escaped as in JSON.
// Anything else (a quote, a brace) ends it, so redacting serialized JSON never eats the text around a string.
const KEY_BLOCK = /(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)((?:[A-Za-z0-9+/=:,.\s-]|\\[nr])*)/g;
// A line that ends in a long base64 word (after nothing, whitespace, a quote, '=' or '|': a log's or an error's
// decoration): a key's body line, even when its BEGIN line is not in the text (an error's last 20 lines, a console
// trace that printed the key line by line). The line after one is the body's short last line when it too is only base64.
const BODY_LINE = /^(.*?(?:^|[\s'"=|]))([A-Za-z0-9+/]{40,}={0,2})(['"]?\s*)$/;
const BODY_LAST_LINE = /^(.*?(?:^|[\s'"=|]))([A-Za-z0-9+/]{2,}={0,2})(['"]?\s*)$/;

/** Base64 of a key has upper and lower case and digits; a hex digest or a long word does not. */
function keyLike(word: string): boolean {
  return /[A-Z]/.test(word) && /[a-z]/.test(word) && /[0-9+/]/.test(word);
}

/** Line by line, with state: key body lines (see BODY_LINE) become "***" after their decoration. */
function bodyLineRedactor(): (line: string) => string {
  let afterBody = false;
  return (line) => {
    // Key lines are short; a long line is something else (and not worth a regex scan per separator).
    const body = line.length < 1000 ? BODY_LINE.exec(line) : null;
    if (body?.[2] && keyLike(body[2])) {
      afterBody = true;
      return `${body[1]}***${body[3]}`;
    }
    const last = afterBody && line.length < 1000 ? BODY_LAST_LINE.exec(line) : null;
    afterBody = false;
    return last?.[2] && /[A-Z0-9+/=]/.test(last[2]) ? `${last[1]}***${last[3]}` : line;
  };
}

/**
 * Text safe to print: credentials in any URL ("http://user:secret@proxy:3128") become "***", the body of a PEM
 * private key block is dropped (when the block is not closed, up to the first character no key holds), and so are
 * lines that look like a key's body without their BEGIN line (BODY_LINE). DIB_* values and script output may carry a
 * proxy URL or a key the user did not mean to publish in a log or a CI transcript.
 */
export function redactSecrets(text: string): string {
  const body = bodyLineRedactor();
  return redactBlocks(text).split("\n").map(body).join("\n");
}

function redactBlocks(text: string): string {
  return text.replace(URL_USERINFO, "$1***@").replace(KEY_BLOCK, (_m, begin: string, rest: string) => {
    const end = KEY_END.exec(rest);
    // No END in the block's characters: drop what follows BEGIN, the safe side for a key cut off mid-way.
    return end ? `${begin} *** ${end[0]}${redactBlocks(rest.slice(end.index + end[0].length))}` : `${begin} ***`;
  });
}

/**
 * A redactor for output that arrives line by line (script output): like redactSecrets, and the lines between a
 * private key's BEGIN and END lines, which carry no marker of their own, are replaced by "***" whatever they look like.
 */
export function lineRedactor(): (line: string) => string {
  let inKey = false;
  const body = bodyLineRedactor();
  return (line) => {
    if (inKey) {
      if (!KEY_END.test(line)) return "***";
      inKey = false;
    } else if (KEY_BEGIN.test(line) && !KEY_END.test(line)) inKey = true;
    return body(redactBlocks(line));
  };
}

/**
 * A whole log (a kept serial console) with one lineRedactor across all its lines: a key printed line by line, even
 * inside a shell trace ("+ printf '%s\n' 'b3Blbn…'"), is dropped from its BEGIN line to its END line.
 */
export function redactLog(text: string): string {
  return text.split("\n").map(lineRedactor()).join("\n");
}
