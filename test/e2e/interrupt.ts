// `vmdib build` interrupted for real in the middle of install.d (fixture element tiny-slow): its QEMU SIGKILLed,
// SIGTERM and SIGINT (Ctrl-C) to vmdib itself. Every way: a clear message and exit code, no QEMU left, no run or
// work directory left in TMPDIR, and the older image at the same -o untouched.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { pidAlive } from "../../src/lock.js";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { waitFor } from "../vm/helpers.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

/** The build's work directories (TMPDIR/vmdib-build-*) and VM run directories (TMPDIR/vmdib-<uid>/run-*). */
async function leftovers(tmp: string): Promise<string[]> {
  const found = (await readdir(tmp)).filter((n) => n.startsWith("vmdib-build-")).map((n) => join(tmp, n));
  for (const base of (await readdir(tmp)).filter((n) => /^vmdib-\d+$/.test(n))) {
    for (const n of await readdir(join(tmp, base))) if (n.startsWith("run-")) found.push(join(tmp, base, n));
  }
  return found;
}

/** A build of tiny-os + tiny-slow started in its own TMPDIR, with an older image at -o; resolves once install.d waits. */
async function startSlowBuild(t: { teardown(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-interrupt-"));
  const tmp = join(dir, "tmp");
  await mkdir(join(dir, "out"), { recursive: true });
  await mkdir(tmp);
  await writeFile(join(dir, "out", "tiny.qcow2"), "an older image\n");
  const child = spawn(VMDIB, ["build", "-n", "--no-cache", "-o", join(dir, "out", "tiny"), "tiny-os", "tiny-slow"], {
    cwd: dir,
    env: { ...process.env, ELEMENTS_PATH: ELEMENTS, TMPDIR: tmp },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, as a shell gives a foreground job: Ctrl-C is then a SIGINT to the whole group.
    detached: true,
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code, sig) => resolve(code ?? (sig ? -1 : null))),
  );
  t.teardown(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });
  const waiting = await waitFor(() => stdout.includes("tiny-slow: waiting") || child.exitCode !== null, 900_000);
  if (!waiting || child.exitCode !== null) throw new Error(`the build did not reach install.d:\n${stdout}\n${stderr}`);
  // The VM's run directory holds QEMU's pid file.
  const base = (await readdir(tmp)).find((n) => /^vmdib-\d+$/.test(n)) ?? "";
  const run = (await readdir(join(tmp, base))).find((n) => n.startsWith("run-")) ?? "";
  const qemuPid = Number((await readFile(join(tmp, base, run, "qemu.pid"), "utf8")).trim());
  return { dir, tmp, child: child as ChildProcess, exited, qemuPid, out: () => ({ stdout, stderr }) };
}

t.test("QEMU SIGKILLed during install.d: exit 1 naming the step and script, console tail, nothing left", async (t) => {
  const b = await startSlowBuild(t);
  t.ok(pidAlive(b.qemuPid), "QEMU runs");
  process.kill(b.qemuPid, "SIGKILL");
  const code = await b.exited;
  const { stderr } = b.out();
  t.equal(code, 1, stderr);
  t.match(
    stderr,
    /step 'install' failed in install\.d\/50-tiny-slow: the appliance VM died .*QEMU was killed by SIGKILL/,
    "names the step and the script, and says the VM was killed",
  );
  t.match(stderr, /tiny-slow: waiting/, "with the script's last lines");
  t.match(stderr, /serial|console/, "points at the serial console");
  t.same(await leftovers(b.tmp), [], "no run or work directory left");
  t.equal(await readFile(join(b.dir, "out", "tiny.qcow2"), "utf8"), "an older image\n", "older image untouched");
  t.same(
    (await readdir(join(b.dir, "out"))).filter((n) => !n.startsWith(".")),
    ["tiny.qcow2"],
    "no partial output",
  );
});

t.test("SIGTERM to vmdib build during install.d: exit 143 within 30 s, QEMU gone, nothing left", async (t) => {
  const b = await startSlowBuild(t);
  const t0 = Date.now();
  b.child.kill("SIGTERM");
  const code = await b.exited;
  const s = (Date.now() - t0) / 1000;
  t.equal(code, 143, b.out().stderr);
  t.ok(s < 30, `ended ${s.toFixed(1)} s after SIGTERM`);
  t.notOk(pidAlive(b.qemuPid), "QEMU is gone");
  t.same(await leftovers(b.tmp), [], "no run or work directory left");
  t.equal(await readFile(join(b.dir, "out", "tiny.qcow2"), "utf8"), "an older image\n", "older image untouched");
  t.notOk(existsSync(join(b.dir, "out", "tiny.raw")), "no partial raw image");
});

t.test(
  "Ctrl-C (SIGINT to the process group) during install.d: exit 130 within 30 s, QEMU gone, nothing left",
  async (t) => {
    const b = await startSlowBuild(t);
    const t0 = Date.now();
    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group, vmdib and its children.
    process.kill(-(b.child.pid as number), "SIGINT");
    const code = await b.exited;
    const s = (Date.now() - t0) / 1000;
    t.equal(code, 130, b.out().stderr);
    t.match(b.out().stderr, /interrupted/i, "says it was interrupted, not that the VM died");
    t.ok(s < 30, `ended ${s.toFixed(1)} s after SIGINT`);
    t.notOk(pidAlive(b.qemuPid), "QEMU is gone");
    t.same(await leftovers(b.tmp), [], "no run or work directory left");
    t.equal(await readFile(join(b.dir, "out", "tiny.qcow2"), "utf8"), "an older image\n", "older image untouched");
  },
);
