// Tests src/vm/machine.ts against the real appliance (one boot for the file): output and exit codes, 100 MB
// through stdout, files crossing the 9p shares intact, read-only element shares, exec latency.
import { createHash } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import type { Machine } from "../../src/vm/machine.js";
import { generateKeys, SshSession } from "../../src/vm/ssh.js";
import { bootMachine, collector, tempDir } from "./helpers.js";

const work = await tempDir("vmdib-test-work-");
const elements = await tempDir("vmdib-test-el-");
await writeFile(join(elements.path, "hello.txt"), "from the host\n");
let machine: Machine;
try {
  machine = await bootMachine({
    shares: [
      { hostPath: work.path, guestPath: "/vmdib/work", readonly: false },
      { hostPath: elements.path, guestPath: "/vmdib/elements/0", readonly: true },
    ],
    disks: [{ serial: "scratch", sizeBytes: 256 * 1024 * 1024 }],
  });
} catch (err) {
  await work.done();
  await elements.done();
  throw err;
}
t.comment(
  `ready after ${(machine.readyMs / 1000).toFixed(2)} s (${machine.accel.accel}; guest uptime ${machine.guestUptimeAtReady} s)`,
);
t.teardown(async () => {
  await machine.stop();
  await work.done();
  await elements.done();
});

async function run(cmd: string | string[]) {
  const out = collector();
  const err = collector();
  const code = await machine.exec(cmd, { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

t.test("stdout, stderr and the exit code come back separately", async (t) => {
  t.same(await run("echo out; echo err >&2; exit 3"), { code: 3, stdout: "out\n", stderr: "err\n" });
  t.same(await run(["printf", "%s\\n", "it's $(not) expanded"]), {
    code: 0,
    stdout: "it's $(not) expanded\n",
    stderr: "",
  });
  t.equal((await run("uname -s")).stdout, "Linux\n");
  t.equal((await run("id -u")).stdout, "0\n", "commands run as root");
});

t.test("a command killed by a signal gives 128+n", async (t) => {
  t.equal((await run("kill -KILL $$")).code, 137);
});

t.test("the command's stdin is at EOF (nothing hangs waiting for input)", async (t) => {
  t.same(await run("cat; echo done"), { code: 0, stdout: "done\n", stderr: "" });
});

t.test("100 MB through stdout, counted, with a slow consumer", async (t) => {
  let bytes = 0;
  let writes = 0;
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      // Every 64th chunk takes a while: backpressure must hold the producer back, not lose or stall data.
      if (++writes % 64 === 0) setTimeout(cb, 5);
      else cb();
    },
  });
  const t0 = performance.now();
  const code = await machine.exec("head -c 100000000 /dev/zero", { stdout: sink });
  const s = (performance.now() - t0) / 1000;
  t.equal(code, 0);
  t.equal(bytes, 100_000_000);
  t.comment(`100 MB in ${s.toFixed(1)} s (${(100 / s).toFixed(1)} MB/s)`);
});

t.test("a file the guest writes into the work share arrives intact", async (t) => {
  const r = await run("head -c 20000000 /dev/urandom > /vmdib/work/blob && sha256sum /vmdib/work/blob");
  t.equal(r.code, 0, r.stderr);
  const guestHash = r.stdout.split(" ")[0];
  const hostHash = createHash("sha256")
    .update(await readFile(join(work.path, "blob")))
    .digest("hex");
  t.equal(hostHash, guestHash);
  t.equal((await stat(join(work.path, "blob"))).uid, process.getuid?.(), "owned by the user running QEMU");
});

t.test("element shares are readable and read-only", async (t) => {
  t.equal((await run("cat /vmdib/elements/0/hello.txt")).stdout, "from the host\n");
  const w = await run("touch /vmdib/elements/0/new");
  t.not(w.code, 0);
  t.match(w.stderr, /Read-only file system/);
});

t.test("exec latency", async (t) => {
  const n = 5;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) t.equal(await machine.exec("true"), 0);
  t.comment(`exec latency: ${((performance.now() - t0) / n).toFixed(0)} ms per command`);
});

t.test("the work share has nothing of the host outside it", async (t) => {
  const r = await run("ls -a /vmdib/work/..; cat /vmdib/work/../../etc/hostname");
  t.match(r.stdout, /work/);
  t.equal(r.stdout.includes("hello.txt"), false);
  t.match(r.stdout, /vmdib/, "/etc/hostname is the guest's own");
});

t.test("a scratch disk is found by its serial and usable", async (t) => {
  const r = await run(
    "mkfs.ext4 -q /dev/disk/by-id/virtio-scratch && mount /dev/disk/by-id/virtio-scratch /mnt && df -k /mnt | tail -1",
  );
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\/mnt/);
  await run("umount /mnt");
});

t.test("secrets: 0700 run directory, 0600 keys, the client's private key never on disk", async (t) => {
  t.equal((await stat(machine.runDir)).mode & 0o777, 0o700);
  for (const f of ["ssh_host_ed25519_key", "authorized_keys"]) {
    t.equal((await stat(join(machine.runDir, f))).mode & 0o777, 0o600, f);
  }
  for (const f of await readdir(machine.runDir)) {
    if ((await stat(join(machine.runDir, f))).size > 1_000_000) continue; // disk images
    const text = await readFile(join(machine.runDir, f), "latin1").catch(() => "");
    if (f !== "ssh_host_ed25519_key") t.notMatch(text, /PRIVATE KEY/, `${f} holds no private key`);
  }
});

t.test("the host key is pinned: a guest with another key is refused", async (t) => {
  // Expecting a different host key than the one this guest was given must fail before authentication.
  const err = await SshSession.connect({ port: machine.sshPort, keys: generateKeys(), timeoutMs: 20_000 }).catch(
    (e: unknown) => e,
  );
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /host key is not the one injected/);
});
