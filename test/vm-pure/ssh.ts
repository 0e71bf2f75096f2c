// Tests src/vm/ssh.ts without a VM: shell quoting of argv, fresh distinct ed25519 keys in OpenSSH format, and exit
// statuses against an in-process ssh2 server.
import { spawnSync } from "node:child_process";
import type { AddressInfo } from "node:net";
import ssh2 from "ssh2";
import t from "tap";
import { shellJoin as shellQuote } from "../../src/shell.js";
import { generateKeys, SshSession } from "../../src/vm/ssh.js";

const { Server } = ssh2;

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

// A quick command's exit status can reach the client in the same read as the server's "exec accepted": ssh2 then
// emits "exit" before handing us the channel. A guest stand-in that answers every exec at once, in one write.
t.test("exec: a command that ends at once still reports its exit status", async (t) => {
  const keys = generateKeys();
  const server = new Server({ hostKeys: [keys.hostPrivate] }, (client) => {
    // No Nagle: "accepted", the exit status, EOF and close leave as written and arrive together.
    // (ssh2 has the method; its type definitions lack it.)
    (client as unknown as { setNoDelay(on: boolean): void }).setNoDelay(true);
    client.on("authentication", (ctx) => ctx.accept());
    client.on("ready", () => {
      client.on("session", (accept) => {
        accept().on("exec", (acceptExec, _reject, info) => {
          const stream = acceptExec();
          stream.exit(Number(info.command));
          stream.end();
        });
      });
    });
    client.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const session = await SshSession.connect({ port: (server.address() as AddressInfo).port, keys });
  t.teardown(() => session.close());
  const codes: (number | null)[] = [];
  for (let i = 0; i < 200; i++) codes.push((await session.exec(String(i % 7))).code);
  t.same(
    codes,
    codes.map((_, i) => i % 7),
    "every exit status arrives",
  );
});
