// Tests sshLoginAndRun (src/vm/image-boot.ts), the SSH half of `vmdib test`, against an in-process ssh2 server: key
// and password logins, command output and exit codes, retrying while sshd is not up yet, giving up on a wrong key.
import type { AddressInfo } from "node:net";
import ssh2 from "ssh2";
import t from "tap";
import { sshFingerprint, sshLoginAndRun } from "../../src/vm/image-boot.js";
import { generateKeys } from "../../src/vm/ssh.js";

const { Server, utils } = ssh2;

const keys = generateKeys();
const other = generateKeys();

function publicBlob(text: string): Buffer {
  const k = utils.parseKey(text);
  if (k instanceof Error) throw k;
  return (Array.isArray(k) ? k[0] : k).getPublicSSH();
}

/** A guest stand-in: user devuser with our client key or password "secret"; runs two known commands. */
function startServer(port = 0): Promise<{ port: number; close: () => Promise<void> }> {
  const allowed = publicBlob(keys.clientPublic);
  const server = new Server({ hostKeys: [keys.hostPrivate] }, (client) => {
    client.on("authentication", (ctx) => {
      if (ctx.username !== "devuser") return ctx.reject();
      if (ctx.method === "password") return ctx.password === "secret" ? ctx.accept() : ctx.reject();
      if (ctx.method !== "publickey" || !ctx.key.data.equals(allowed)) return ctx.reject();
      if (!ctx.signature) return ctx.accept(); // the client asks whether this key would do
      const k = utils.parseKey(keys.clientPublic);
      const key = Array.isArray(k) ? k[0] : k;
      if (key instanceof Error || !key || !ctx.blob) return ctx.reject();
      return key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true ? ctx.accept() : ctx.reject();
    });
    client.on("ready", () => {
      client.on("session", (accept) => {
        accept().on("exec", (acceptExec, _reject, info) => {
          const stream = acceptExec();
          if (info.command === "cat /proc/cmdline") {
            stream.write("root=LABEL=cloudimg-rootfs ro console=ttyS0,115200\n");
            stream.exit(0);
          } else {
            stream.stderr.write(`sh: ${info.command}: not found\n`);
            stream.exit(127);
          }
          stream.end();
        });
      });
    });
    client.on("error", () => {});
  });
  return new Promise((resolve) => {
    server.listen(port, "127.0.0.1", () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}

t.test("key login: output, exit codes and the host key fingerprint", async (t) => {
  const s = await startServer();
  t.teardown(s.close);
  const r = await sshLoginAndRun({
    port: s.port,
    user: "devuser",
    auth: { privateKey: keys.clientPrivate },
    commands: ["cat /proc/cmdline", "nosuch"],
    deadline: performance.now() + 20_000,
  });
  t.equal(r.hostKey, sshFingerprint(publicBlob(keys.hostPublic)));
  t.same(r.commands, [
    {
      command: "cat /proc/cmdline",
      exitCode: 0,
      stdout: "root=LABEL=cloudimg-rootfs ro console=ttyS0,115200\n",
      stderr: "",
    },
    { command: "nosuch", exitCode: 127, stdout: "", stderr: "sh: nosuch: not found\n" },
  ]);
});

t.test("password login", async (t) => {
  const s = await startServer();
  t.teardown(s.close);
  const r = await sshLoginAndRun({
    port: s.port,
    user: "devuser",
    auth: { password: "secret" },
    commands: ["cat /proc/cmdline"],
    deadline: performance.now() + 20_000,
  });
  t.equal(r.commands[0]?.exitCode, 0);
});

t.test("retries while nothing listens yet, then logs in", async (t) => {
  // Reserve a port, free it, and start the server on it a few seconds later (a guest whose sshd starts late).
  const probe = await startServer();
  const port = probe.port;
  await probe.close();
  let late: { close: () => Promise<void> } | undefined;
  const timer = setTimeout(async () => {
    late = await startServer(port);
  }, 3_000);
  t.teardown(async () => {
    clearTimeout(timer);
    await late?.close();
  });
  const r = await sshLoginAndRun({
    port,
    user: "devuser",
    auth: { privateKey: keys.clientPrivate },
    commands: ["cat /proc/cmdline"],
    deadline: performance.now() + 30_000,
  });
  t.ok(r.connectMs >= 2_500, `logged in after ${Math.round(r.connectMs)} ms`);
  t.equal(r.commands[0]?.exitCode, 0);
});

t.test("a wrong key fails after a few tries, not at the deadline", async (t) => {
  const s = await startServer();
  t.teardown(s.close);
  const t0 = performance.now();
  await t.rejects(
    sshLoginAndRun({
      port: s.port,
      user: "devuser",
      auth: { privateKey: other.clientPrivate },
      commands: ["true"],
      deadline: performance.now() + 120_000,
    }),
    /authentication methods failed/,
  );
  t.ok(performance.now() - t0 < 30_000);
});

t.test("nothing ever listening: fails at the deadline with the connection error", async (t) => {
  const probe = await startServer();
  await probe.close();
  await t.rejects(
    sshLoginAndRun({
      port: probe.port,
      user: "devuser",
      auth: { password: "secret" },
      commands: ["true"],
      deadline: performance.now() + 3_000,
    }),
    /ECONNREFUSED/,
  );
});
