// Tests src/redact.ts: URL credentials and private keys are removed from single texts and from line streams.
import t from "tap";
import { lineRedactor, redactSecrets } from "../src/redact.js";

const KEY = [
  "-----BEGIN OPENSSH PRIVATE KEY-----",
  "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
  "QyNTUxOQAAACBfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeAAAA==",
  "-----END OPENSSH PRIVATE KEY-----",
];

t.test("credentials in URLs become ***, anywhere in the text", async (t) => {
  t.equal(redactSecrets("http_proxy=http://alice:s3cret@proxy.local:3128/"), "http_proxy=http://***@proxy.local:3128/");
  t.equal(redactSecrets('{"M":"https://u:p%40ss@m.local/debian"}'), '{"M":"https://***@m.local/debian"}');
  t.equal(redactSecrets("a http://x:y@h b ftp://q:r@s"), "a http://***@h b ftp://***@s");
  t.equal(redactSecrets("http://host/path@x and user@example"), "http://host/path@x and user@example", "no userinfo");
});

t.test("a private key block keeps its markers and loses its body", async (t) => {
  const out = redactSecrets(`before\n${KEY.join("\n")}\nafter`);
  t.notMatch(out, /b3BlbnNz|fakeFAKE/);
  t.match(out, /^before\n-----BEGIN OPENSSH PRIVATE KEY----- \*\*\* -----END OPENSSH PRIVATE KEY-----\nafter$/);
  t.notMatch(redactSecrets(KEY.join("\\n")), /b3BlbnNz/, "escaped newlines, as in JSON");
  t.notMatch(redactSecrets(KEY.slice(0, 3).join("\n")), /b3BlbnNz|fakeFAKE/, "an unterminated block");
});

t.test("line by line: the lines between BEGIN and END are dropped", async (t) => {
  const r = lineRedactor();
  const out = ["ok", ...KEY, "after http://a:b@c/"].map(r);
  t.same(out, ["ok", `${KEY[0]} ***`, "***", "***", KEY[3], "after http://***@c/"]);
});
