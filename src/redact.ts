// Keeping secrets out of what vmdib prints: credentials in URLs and private keys, in one text or a stream of lines.

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"`]+@/gi;
const KEY_BEGIN = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
const KEY_END = /-----END [A-Z0-9 ]*PRIVATE KEY-----/;
// A key block's body: base64, PEM headers ("Proc-Type: 4,ENCRYPTED"), whitespace, or newlines escaped as in JSON.
// Anything else (a quote, a brace) ends it, so redacting serialized JSON never eats the text around a string.
const KEY_BLOCK = /(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)((?:[A-Za-z0-9+/=:,.\s-]|\\[nr])*)/g;

/**
 * Text safe to print: credentials in any URL ("http://user:secret@proxy:3128") become "***", and the body of a
 * PEM private key block is dropped (when the block is not closed, up to the first character no key holds). DIB_* values and script
 * output may carry a proxy URL or a key the user did not mean to publish in a log or a CI transcript.
 */
export function redactSecrets(text: string): string {
  return text.replace(URL_USERINFO, "$1***@").replace(KEY_BLOCK, (_m, begin: string, rest: string) => {
    const end = KEY_END.exec(rest);
    // No END in the block's characters: drop what follows BEGIN, the safe side for a key cut off mid-way.
    return end ? `${begin} *** ${end[0]}${redactSecrets(rest.slice(end.index + end[0].length))}` : `${begin} ***`;
  });
}

/**
 * A redactor for output that arrives line by line (script output): like redactSecrets, and the lines between a
 * private key's BEGIN and END lines, which carry no marker of their own, are replaced by "***".
 */
export function lineRedactor(): (line: string) => string {
  let inKey = false;
  return (line) => {
    if (inKey) {
      if (!KEY_END.test(line)) return "***";
      inKey = false;
      return redactSecrets(line);
    }
    if (KEY_BEGIN.test(line) && !KEY_END.test(line)) inKey = true;
    return redactSecrets(line);
  };
}
