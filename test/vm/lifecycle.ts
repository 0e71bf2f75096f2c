// Tests that no QEMU outlives its controller and failures read well: two appliances side by side, the guest killed
// mid-command, the controller SIGKILLed (with and without setpriv's parent-death signal), SIGTERM to `vmdib run`.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import getPort from "get-port";
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import { pidAlive } from "../../src/lock.js";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { sweepStaleRunDirs } from "../../src/vm/machine.js";
import { QmpClient } from "../../src/vm/qmp.js";
import { bootMachine, collector, prepareVm, tempDir, waitFor } from "./helpers.js";

await prepareVm();

/** Lines of a child's stream, as they arrive, until `pred` matches one. */
function waitForLine(child: ChildProcess, stream: "stdout" | "stderr", pred: RegExp, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no line matching ${pred} within ${ms} ms; got: ${buf}`)), ms);
    child[stream]?.on("data", (d: Buffer) => {
      buf += d.toString();
      const m = buf.split("\n").find((l) => pred.test(l));
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.on("exit", () => reject(new Error(`child exited before printing ${pred}: ${buf}`)));
  });
}

t.test("a guest that cannot boot: QEMU ends, the error shows the console and says where the full log is", async (t) => {
  const vm = await prepareVm();
  const tmp = await tempDir("vmdib-test-bad-");
  t.teardown(tmp.done);
  const empty = join(tmp.path, "empty.cpio");
  await writeFile(empty, "");
  const t0 = Date.now();
  const err = await bootMachine({ appliance: { ...vm.appliance, initrd: empty } }).catch((e: unknown) => e);
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /stopped before it was ready: QEMU exited/);
  t.ok(
    (err as VmdibError).context.some((l) => /Kernel panic/.test(l)),
    "the panic is in the context",
  );
  t.notOk(
    (err as VmdibError).context.some((l) => /Call Trace/.test(l)),
    "without the stack dump",
  );
  t.ok((err as VmdibError).context.some((l) => /full serial console: .*last-serial\.log/.test(l)));
  t.comment(`failed boot reported after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

t.test("a guest that stops answering is detected by keepalives within a bounded time", async (t) => {
  const m = await bootMachine({ keepalive: { intervalMs: 1000, countMax: 5 } });
  t.teardown(async () => {
    process.kill(m.pid, "SIGCONT");
    await m.stop();
  });
  const running = m.exec("sleep 300");
  await new Promise((r) => setTimeout(r, 1000));
  // SIGSTOP freezes QEMU whole: the guest, its network and the forwarded port all stop answering.
  process.kill(m.pid, "SIGSTOP");
  const t0 = Date.now();
  const err = await running.catch((e: unknown) => e);
  const s = (Date.now() - t0) / 1000;
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /lost the SSH connection to the appliance while running `sleep 300`/);
  t.match((err as VmdibError).hint, /stopped answering/);
  t.ok(
    (err as VmdibError).context.some((l) => /QEMU itself stopped responding/.test(l)),
    "says that QEMU itself is frozen",
  );
  t.ok(s < 30, `noticed after ${s.toFixed(1)} s`);
});

t.test("a guest whose network goes down while QEMU runs: keepalives notice, clear error, nothing left", async (t) => {
  const m = await bootMachine({ keepalive: { intervalMs: 1000, countMax: 5 } });
  t.teardown(() => m.stop());
  const running = m.exec("sleep 300");
  await new Promise((r) => setTimeout(r, 1000));
  // The guest keeps running; only its NIC loses its link (the user-net netdev of qemu.ts), as when a guest's
  // network stack wedges: the forwarded port still accepts, nothing answers behind it.
  const qmp = await QmpClient.connect(m.qmpSocket);
  await qmp.execute("set_link", { name: "net0", up: false });
  qmp.close();
  const t0 = Date.now();
  const err = await running.catch((e: unknown) => e);
  const s = (Date.now() - t0) / 1000;
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /lost the SSH connection to the appliance while running `sleep 300`/);
  t.ok(
    (err as VmdibError).context.some((l) =>
      /no answer to SSH keepalives for 5 s; QEMU still runs the guest \(running\)/.test(l),
    ),
    "says that QEMU still runs and the network went quiet",
  );
  t.match((err as VmdibError).hint, /stopped answering/);
  t.ok(s < 30, `noticed after ${s.toFixed(1)} s`);
  await m.stop();
  t.notOk(pidAlive(m.pid), "QEMU is gone");
  t.notOk(existsSync(m.runDir), "run directory removed");
});

t.test("the forwarded port taken before QEMU binds it: retried with another", async (t) => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const taken = (blocker.address() as AddressInfo).port;
  const offered: number[] = [];
  const log: string[] = [];
  const m = await bootMachine({
    getPort: async () => {
      const p = offered.length === 0 ? taken : await getPort({ host: "127.0.0.1" });
      offered.push(p);
      return p;
    },
    log: (l) => log.push(l),
  });
  t.teardown(() => m.stop());
  t.equal(offered.length, 2);
  t.equal(m.sshPort, offered[1]);
  t.ok(log.some((l) => l.includes(`port ${taken} was taken`)));
  t.equal(await m.exec("true"), 0);
});

t.test("two appliances at once do not interfere; killing one mid-command gives a clear error", async (t) => {
  const [a, b] = await Promise.all([bootMachine(), bootMachine()]);
  t.teardown(async () => {
    await Promise.allSettled([a.stop(), b.stop()]);
  });
  t.not(a.sshPort, b.sshPort);
  const id = async (m: typeof a) => {
    const out = collector();
    t.equal(await m.exec("cat /proc/sys/kernel/random/boot_id", { stdout: out.stream }), 0);
    return out.text().trim();
  };
  const [ida, idb] = await Promise.all([id(a), id(b)]);
  t.not(ida, idb, "each command reached its own guest");

  // Kill A's QEMU while a command runs in it.
  const running = a.exec("sleep 300");
  setTimeout(() => process.kill(a.pid, "SIGKILL"), 1500);
  const err = await running.catch((e: unknown) => e);
  t.ok(err instanceof VmdibError, "a VmdibError");
  t.match((err as VmdibError).message, /appliance VM died while running `sleep 300`: QEMU was killed by SIGKILL/);
  t.ok((err as VmdibError).context.includes("serial console:"), "with the tail of the serial console");
  t.ok((err as VmdibError).context.some((l) => /vmdib-init: ready/.test(l)));
  await a.stop();
  t.notOk(existsSync(a.runDir), "its run directory is removed");

  // B carries on.
  t.equal(await id(b), idb);
  await b.stop();
  t.notOk(pidAlive(b.pid));
  t.notOk(existsSync(b.runDir));
});

/** Start `vmdib run -v -- sleep 600` with its own TMPDIR; resolve once the guest is ready, with QEMU's pid. */
async function startCliRun(): Promise<{ child: ChildProcess; qemuPid: number; runDir: string; tmp: string }> {
  const tmp = await tempDir("vmdib-test-tmp-");
  const child = spawn(process.execPath, [join(PACKAGE_ROOT, "bin", "vmdib"), "run", "-v", "--", "sleep", "600"], {
    env: { ...process.env, TMPDIR: tmp.path },
    stdio: ["ignore", "pipe", "pipe"],
  });
  await waitForLine(child, "stderr", /guest ready after/, 300_000);
  const base = join(tmp.path, `vmdib-${userInfo().uid}`);
  const [run] = (await readdir(base)).filter((n) => n.startsWith("run-"));
  const runDir = join(base, run ?? "missing");
  const qemuPid = Number.parseInt(await readFile(join(runDir, "qemu.pid"), "utf8"), 10);
  return { child, qemuPid, runDir, tmp: tmp.path };
}

t.test("SIGTERM to `vmdib run` mid-command: exit 143, QEMU gone, run directory removed", async (t) => {
  const { child, qemuPid, runDir } = await startCliRun();
  t.ok(pidAlive(qemuPid));
  const t0 = Date.now();
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  child.kill("SIGTERM");
  t.equal(await exited, 143);
  t.ok(Date.now() - t0 < 30_000, "within 30 s");
  t.notOk(pidAlive(qemuPid), "QEMU is gone");
  t.notOk(existsSync(runDir), "run directory removed");
});

t.test(
  "`vmdib run` SIGKILLed: its QEMU is gone within a minute; the next start sweeps the run directory",
  async (t) => {
    const { child, qemuPid, runDir, tmp } = await startCliRun();
    child.kill("SIGKILL");
    t.ok(await waitFor(() => !pidAlive(qemuPid), 60_000), `QEMU ${qemuPid} gone`);
    t.ok(existsSync(runDir), "a SIGKILLed controller cannot clean up after itself...");
    const swept = await sweepStaleRunDirs({ ...process.env, TMPDIR: tmp });
    t.same(swept, [runDir], "...so the next start does");
  },
);

t.test("controller SIGKILLed without parent-death signal: the guest's lifeline powers it off", async (t) => {
  const child = spawn(process.execPath, [join(PACKAGE_ROOT, "dist", "test", "vm", "controller-child.js")], {
    env: { ...process.env, VMDIB_TEST_CHILD: "1" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await waitForLine(child, "stdout", /^qemu-pid \d+/, 300_000);
  const qemuPid = Number(/^qemu-pid (\d+)/.exec(line)?.[1]);
  t.ok(pidAlive(qemuPid));
  const t0 = Date.now();
  child.kill("SIGKILL");
  t.ok(await waitFor(() => !pidAlive(qemuPid), 60_000), "QEMU gone within a minute");
  t.comment(`QEMU ended ${((Date.now() - t0) / 1000).toFixed(1)} s after its controller was killed`);
  await sweepStaleRunDirs();
});
