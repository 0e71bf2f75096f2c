// Tests src/vm/snapshot.ts and the snapshot start in src/vm/machine.ts with real QEMU (TCG): the first start saves a
// snapshot, later ones restore it; shares, keys and the clock are the run's own; two restored VMs side by side; the
// lifeline still ends QEMU when the controller is SIGKILLed; a damaged snapshot falls back to a cold boot.
// The appliance files are copied to a private directory, so the snapshots made here are this test's alone.
import { spawn } from "node:child_process";
import { existsSync, constants as fsc } from "node:fs";
import { copyFile, open, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { pidAlive } from "../../src/lock.js";
import type { ApplianceFiles, Machine, StartOptions } from "../../src/vm/machine.js";
import { runConfigText, SNAPSHOT_DISK_BYTES } from "../../src/vm/snapshot.js";
import { bootMachine, collector, prepareVm, tempDir, waitFor } from "./helpers.js";

if (process.env.VMDIB_SNAPSHOT_CHILD === "1") {
  // Child mode (the SIGKILL test): restore without setpriv's parent-death signal, so only the lifeline can stop QEMU.
  const appliance = JSON.parse(process.env.VMDIB_SNAPSHOT_APPLIANCE ?? "{}") as ApplianceFiles;
  const machine = await bootMachine({ appliance, pdeathsig: false });
  process.stdout.write(`qemu-pid ${machine.pid} start ${machine.start}\n`);
  await machine.exec("sleep 600");
  process.exit(0);
}

t.test("run config text: mounts by slot, one line per key line, ended by 'end'", async (t) => {
  const text = runConfigText({
    mounts: [{ slot: 0, guestPath: "/work", readonly: false }],
    authorizedKey: "ssh-ed25519 AAAA x",
    hostKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nabc=\n-----END OPENSSH PRIVATE KEY-----\n",
    time: 1700000000.7,
    seed: "00ff",
    debug: false,
  });
  t.equal(
    text,
    [
      "mount=s0 /work rw",
      "authorized_key=ssh-ed25519 AAAA x",
      "host_key=-----BEGIN OPENSSH PRIVATE KEY-----",
      "host_key=abc=",
      "host_key=-----END OPENSSH PRIVATE KEY-----",
      "time=1700000000",
      "seed=00ff",
      "end",
      "",
    ].join("\n"),
  );
  t.throws(() =>
    runConfigText({
      mounts: [{ slot: 1, guestPath: "relative", readonly: true }],
      authorizedKey: "k",
      hostKey: "k",
      time: 0,
      seed: "",
      debug: false,
    }),
  );
});

const vm = await prepareVm();
const priv = await tempDir("vmdib-snapshot-appliance-");
t.teardown(priv.done);
const copy = async (f: string) => {
  const dest = join(priv.path, basename(f));
  await copyFile(f, dest, fsc.COPYFILE_FICLONE);
  return dest;
};
const appliance: ApplianceFiles = {
  kernel: await copy(vm.appliance.kernel),
  initrd: await copy(vm.appliance.initrd),
  ...(vm.appliance.vmlinux ? { vmlinux: await copy(vm.appliance.vmlinux) } : {}),
};

async function boot(extra: Partial<StartOptions> = {}): Promise<{ m: Machine; log: string[] }> {
  const log: string[] = [];
  const m = await bootMachine({ appliance, log: (l) => log.push(l), ...extra });
  return { m, log };
}

async function snapshotState(): Promise<string | undefined> {
  const n = (await readdir(priv.path)).find((f) => /^snapshot-[0-9a-f]+\.vmstate$/.test(f));
  return n && join(priv.path, n);
}

async function out(m: Machine, cmd: string): Promise<{ code: number; text: string }> {
  const c = collector();
  const code = await m.exec(cmd, { stdout: c.stream, stderr: c.stream });
  return { code, text: c.text() };
}

t.test("the first start saves a snapshot; the next restores it with the run's shares, keys and clock", async (t) => {
  const first = await boot();
  t.equal(first.m.start, "saved", "the first start boots cold and saves a snapshot");
  t.equal(await first.m.exec("true"), 0);
  await first.m.stop();
  t.ok(await waitFor(async () => (await snapshotState()) !== undefined, 60_000), "the snapshot is kept");

  const work = await tempDir("vmdib-snapshot-work-");
  const ro = await tempDir("vmdib-snapshot-ro-");
  t.teardown(work.done);
  t.teardown(ro.done);
  await writeFile(join(ro.path, "given"), "from the host\n");
  const spawned = Date.now();
  const { m, log } = await boot({
    shares: [
      { hostPath: work.path, guestPath: "/work", readonly: false },
      { hostPath: ro.path, guestPath: "/elements", readonly: true },
    ],
    // The snapshot was saved with the placeholder disk: this run's own disk (and its serial) must be what it sees.
    disks: [{ serial: "vmdib-image", path: join(work.path, "image.raw"), sizeBytes: SNAPSHOT_DISK_BYTES }],
  });
  t.teardown(() => m.stop());
  t.equal(m.start, "restored", `restored (${log.at(-1)})`);
  t.equal(await m.exec("true"), 0, "a command runs");
  t.comment(
    `restored: ready after ${(m.readyMs / 1000).toFixed(2)} s, true answered after ${(Date.now() - spawned) / 1000} s`,
  );
  t.equal(await m.exec("echo written-in-guest > /work/result"), 0);
  t.equal(await readFile(join(work.path, "result"), "utf8"), "written-in-guest\n", "a guest write reaches the host");
  t.equal((await out(m, "cat /elements/given")).text, "from the host\n");
  t.not(await m.exec("touch /elements/nope"), 0, "the read-only share refuses writes");
  t.notOk(existsSync(join(ro.path, "nope")));
  t.equal(await m.exec("printf disk-data | dd of=/dev/disk/by-id/virtio-vmdib-image conv=fsync status=none"), 0);
  const head = Buffer.alloc(9);
  const fh = await open(join(work.path, "image.raw"), "r");
  await fh.read(head, 0, 9, 0);
  await fh.close();
  t.equal(head.toString(), "disk-data", "the run's disk, found by its serial");
  const clock = Number((await out(m, "date +%s")).text.trim());
  t.ok(Math.abs(clock - Date.now() / 1000) < 120, `the guest clock is now, not the snapshot's (${clock})`);
  await m.stop();
  t.notOk(pidAlive(m.pid));
});

t.test("two VMs restored from one snapshot at once do not interfere", async (t) => {
  const dirs = await Promise.all([tempDir("vmdib-snapshot-a-"), tempDir("vmdib-snapshot-b-")]);
  for (const d of dirs) t.teardown(d.done);
  const [a, b] = await Promise.all(
    dirs.map((d) => boot({ shares: [{ hostPath: d.path, guestPath: "/work", readonly: false }] })),
  );
  if (!a || !b) throw new Error("unreachable");
  t.teardown(() => a.m.stop());
  t.teardown(() => b.m.stop());
  t.equal(a.m.start, "restored");
  t.equal(b.m.start, "restored");
  t.not(a.m.sshPort, b.m.sshPort, "different ports");
  t.not(a.m.runDir, b.m.runDir, "different run directories");
  await Promise.all([a.m.exec("echo a > /work/who"), b.m.exec("echo b > /work/who")]);
  t.equal(await readFile(join(dirs[0]?.path ?? "", "who"), "utf8"), "a\n");
  t.equal(await readFile(join(dirs[1]?.path ?? "", "who"), "utf8"), "b\n");
  const rand = await Promise.all([a.m, b.m].map((m) => out(m, "head -c 16 /dev/urandom | od -An -tx1")));
  t.not(rand[0]?.text, rand[1]?.text, "their random numbers differ (the seed is per run)");
  await Promise.all([a.m.stop(), b.m.stop()]);
});

t.test("controller SIGKILLed after a restore: the lifeline still ends QEMU", async (t) => {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, VMDIB_SNAPSHOT_CHILD: "1", VMDIB_SNAPSHOT_APPLIANCE: JSON.stringify(appliance) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    let buf = "";
    child.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      const m = /qemu-pid \d+ start \w+/.exec(buf);
      if (m) resolve(m[0]);
    });
    child.on("exit", () => reject(new Error(`child exited: ${buf}`)));
  });
  const [, pid, start] = /qemu-pid (\d+) start (\w+)/.exec(line) ?? [];
  t.equal(start, "restored");
  const qemuPid = Number(pid);
  t.ok(pidAlive(qemuPid));
  child.kill("SIGKILL");
  t.ok(await waitFor(() => !pidAlive(qemuPid), 60_000), "QEMU is gone");
});

t.test("a damaged snapshot is detected and the start falls back to a cold boot", async (t) => {
  const state = await snapshotState();
  if (!state) throw new Error("no snapshot to damage");
  // Bytes changed in the middle: the size stays, the mtime does not, so the hash is checked and fails.
  const fh = await open(state, "r+");
  const { size } = await fh.stat();
  await fh.write(Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor(size / 2));
  await fh.close();
  const damaged = await boot();
  t.teardown(() => damaged.m.stop());
  t.match(damaged.log.join("\n"), /appliance snapshot unusable \(it does not match its sha256\)/);
  t.equal(damaged.m.start, "saved", "cold boot, which saves a fresh snapshot");
  t.equal(await damaged.m.exec("true"), 0, "the run goes on");
  await damaged.m.stop();

  // A stream QEMU cannot load although its meta agrees (as if the hash had passed): QEMU's failure → cold boot.
  t.ok(await waitFor(async () => (await snapshotState()) !== undefined, 60_000));
  const fresh = (await snapshotState()) as string;
  const fh2 = await open(fresh, "r+");
  await fh2.write(Buffer.from("garbage!"), 0, 8, 0);
  await fh2.close();
  const metaPath = fresh.replace(/\.vmstate$/, ".json");
  const meta = JSON.parse(await readFile(metaPath, "utf8")) as Record<string, unknown>;
  const st = await stat(fresh);
  await writeFile(metaPath, JSON.stringify({ ...meta, mtimeMs: st.mtimeMs, ino: st.ino }));
  const broken = await boot();
  t.teardown(() => broken.m.stop());
  t.match(broken.log.join("\n"), /could not restore the appliance snapshot/);
  t.equal(broken.m.start, "saved");
  t.equal(await broken.m.exec("true"), 0);
  await broken.m.stop();
});

t.test("VMDIB_NO_SNAPSHOT=1 and runs that do not fit the snapshot machine boot cold", async (t) => {
  const off = await boot({ env: { ...process.env, VMDIB_NO_SNAPSHOT: "1" } });
  t.teardown(() => off.m.stop());
  t.equal(off.m.start, "cold");
  await off.m.stop();
  const disk = await boot({ disks: [{ serial: "small", sizeBytes: 1 << 20 }] });
  t.teardown(() => disk.m.stop());
  t.equal(disk.m.start, "cold");
  t.match(disk.log.join("\n"), /no snapshot start for this run \(a disk whose size is not the image disk's\)/);
  t.equal(await disk.m.exec("test -b /dev/disk/by-id/virtio-small"), 0);
  await disk.m.stop();
});
