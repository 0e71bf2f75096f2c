// Tests src/redact.ts: URL credentials and private keys are removed from single texts and from line streams.
import t from "tap";
import { lineRedactor, redactLog, redactSecrets } from "../src/redact.js";

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

t.test("serialized JSON stays valid JSON: a key's redaction stops at the end of its string", async (t) => {
  const event = { type: "output", line: KEY[0], next: "kept" };
  const out = redactSecrets(JSON.stringify(event));
  t.same(JSON.parse(out), { type: "output", line: `${KEY[0]} ***`, next: "kept" });
  const plan = redactSecrets(JSON.stringify({ env: { K: KEY.join("\n"), P: "http://u:p@h/" }, after: 1 }, null, 2));
  t.same(JSON.parse(plan), { env: { K: `${KEY[0]} *** ${KEY[3]}`, P: "http://***@h/" }, after: 1 });
  const pem = ["-----BEGIN RSA PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,00FF", "", "QUJD"];
  t.notMatch(redactSecrets(pem.join("\n")), /ENCRYPTED|QUJD/, "PEM headers are part of the body");
});

t.test("key body lines whose BEGIN line is not in the text are dropped (an error's last lines)", async (t) => {
  const context = [
    "step 'finalise' failed",
    ...KEY.slice(1, 3).map((l) => `  | ${l}`),
    "  | cat: No space left on device",
  ];
  const out = redactSecrets(context.join("\n"));
  t.notMatch(out, /b3BlbnNz|fakeFAKE/);
  t.equal(out, ["step 'finalise' failed", "  | ***", "  | ***", "  | cat: No space left on device"].join("\n"));
  const r = lineRedactor();
  t.same(KEY.slice(1).map(r), ["***", "***", KEY[3]], "line by line too");
  t.same(["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAA", "AAECAw==", "done"].map(lineRedactor()), [
    "***",
    "***",
    "done",
  ]);
});

t.test("what is not a key body stays: hex digests, paths, words, JSON", async (t) => {
  const keep = [
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "dib-run-parts Running /tmp/in_target.d/finalise.d/50-tiny-fill-image",
    "done",
    '{"type":"output","line":"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAA","next":1}',
  ];
  for (const l of keep.slice(0, 4)) t.equal(redactSecrets(l), l);
  t.same(JSON.parse(redactSecrets(keep[4] ?? "")).next, 1, "JSON stays JSON");
});

t.test("redactLog: a key traced by a shell (set -x) inside a console log is dropped whole", async (t) => {
  const log = [
    "vmdib-init: starting",
    "+ 1.5 printf '%s\\n' '-----BEGIN OPENSSH PRIVATE KEY-----'",
    "+ 1.5 IFS=",
    `+ 1.5 printf '%s\\n' '${KEY[1]}'`,
    `+ 1.6 value='${KEY[2]}'`,
    "+ 1.6 printf '%s\\n' '-----END OPENSSH PRIVATE KEY-----'",
    "vmdib-init: ready",
  ].join("\n");
  const out = redactLog(log);
  t.notMatch(out, /b3BlbnNz|fakeFAKE/);
  t.match(
    out,
    /^vmdib-init: starting\n.*BEGIN OPENSSH PRIVATE KEY.*\n\*\*\*\n\*\*\*\n\*\*\*\n.*END OPENSSH.*\nvmdib-init: ready$/,
  );
});
