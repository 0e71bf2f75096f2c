// Keeping secrets out of what vmdib prints: credentials in URLs and private keys, in one text or a stream of lines.

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"`]+@/gi;
const KEY_BEGIN = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
const KEY_END = /-----END [A-Z0-9 ]*PRIVATE KEY-----/;
const KEY_BLOCK = /(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g;

/**
 * Text safe to print: credentials in any URL ("http://user:secret@proxy:3128") become "***", and the body of a
 * PEM private key block is dropped (to the end of the text when the block is not closed). DIB_* values and script
 * output may carry a proxy URL or a key the user did not mean to publish in a log or a CI transcript.
 */
export function redactSecrets(text: string): string {
  return text
    .replace(URL_USERINFO, "$1***@")
    .replace(KEY_BLOCK, (_m, begin: string, end: string) => `${begin} *** ${end}`.trimEnd());
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
