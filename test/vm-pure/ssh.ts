// Tests src/vm/ssh.ts without a VM: shell quoting of argv, and fresh distinct ed25519 keys in OpenSSH format.
import { spawnSync } from "node:child_process";
import t from "tap";
import { shellJoin as shellQuote } from "../../src/shell.js";
import { generateKeys } from "../../src/vm/ssh.js";

t.test("shellQuote: each word reaches the command unchanged through sh -c", async (t) => {
  const words = ["printf", "%s|", "a b", "it's", "$(id)", "`x`", "semi;colon", "new\nline", "", "plain-word_1.0"];
  const r = spawnSync("sh", ["-c", shellQuote(words)], { encoding: "utf8" });
  t.equal(r.stdout, "a b|it's|$(id)|`x`|semi;colon|new\nline||plain-word_1.0|");
  t.equal(shellQuote(["uname", "-a"]), "uname -a");
});

t.test("generateKeys: two distinct ed25519 pairs in OpenSSH format", async (t) => {
  const k = generateKeys();
  t.match(k.clientPublic, /^ssh-ed25519 /);
  t.match(k.hostPublic, /^ssh-ed25519 /);
  t.match(k.clientPrivate, /BEGIN OPENSSH PRIVATE KEY/);
  t.not(k.clientPublic, k.hostPublic);
});
