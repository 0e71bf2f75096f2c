// One appliance VM: start it (run dir, keys, QEMU, readiness, SSH) with an undo pushed for every resource, run
// commands and shells in it, and stop it with the shutdown ladder. No QEMU outlives its controller.
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants as fsc } from "node:fs";
import { access, chmod, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { constants as osc, tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import getPort from "get-port";
import { CleanupStack } from "../cleanup.js";
import { VmdibError } from "../errors.js";
import { pidAlive } from "../lock.js";
import { cacheDir } from "../paths.js";
import { redactLog } from "../redact.js";
import { shellJoin } from "../shell.js";
import type { AccelVerdict, QemuInfo } from "./probe.js";
import { hostCpus } from "./probe.js";
import {
  type Disk,
  guestConfigText,
  kernelCmdline,
  type MachineSpec,
  qemuArgv,
  READY_MARKER,
  type Share,
} from "./qemu.js";
import { QmpClient } from "./qmp.js";
import { describeExit, type QemuExit, tailFile, waitForReady } from "./ready.js";
import {
  discardSnapshot,
  incomingArgv,
  runConfigText,
  SNAPSHOT_DISK_BYTES,
  SNAPSHOT_MARKER,
  SNAPSHOT_SLOTS,
  type SnapshotFiles,
  saveSnapshot,
  snapshotFiles,
  snapshotProblem,
} from "./snapshot.js";
import { ConnectionLost, type ExecOptions, generateKeys, type ShellOptions, SshSession } from "./ssh.js";

/** The appliance's boot files, from ensureAppliance(). */
export interface ApplianceFiles {
  /** The bzImage. */
  readonly kernel: string;
  /** The same kernel uncompressed (ELF with a PVH entry): booted when present, seconds faster under TCG. */
  readonly vmlinux?: string | undefined;
  readonly initrd: string;
}

/** The kernel file to boot: the uncompressed vmlinux skips the BIOS real-mode loader and decompression. */
export function bootKernel(a: ApplianceFiles): string {
  return a.vmlinux ?? a.kernel;
}

export interface ShareRequest {
  readonly hostPath: string;
  readonly guestPath: string;
  readonly readonly: boolean;
  /** 9p tag; defaults to s<index>. */
  readonly tag?: string;
}

export interface DiskRequest {
  readonly serial: string;
  /** Host file; defaults to a file in the run directory (removed with it). */
  readonly path?: string;
  readonly format?: "raw" | "qcow2";
  /** Create the (raw, sparse) file with this size if it does not exist. */
  readonly sizeBytes?: number;
}

export interface StartOptions {
  readonly appliance: ApplianceFiles;
  readonly qemu: QemuInfo;
  readonly accel: AccelVerdict;
  readonly cpus?: number;
  readonly memoryMiB?: number;
  readonly shares?: readonly ShareRequest[];
  readonly disks?: readonly DiskRequest[];
  readonly readyTimeoutMs?: number;
  /** Guest /init traces itself and sshd logs to the serial console. */
  readonly debug?: boolean;
  /**
   * Linux: start QEMU under `setpriv --pdeathsig SIGKILL` so the kernel kills it the moment we die (the guest's
   * lifeline watch is the portable mechanism; this is belt and braces). Default: on where setpriv exists.
   */
  readonly pdeathsig?: boolean;
  /**
   * SSH keepalives: a guest silent for intervalMs × countMax (default 5 s × 12) is declared wedged and the running
   * command fails with an explanation instead of hanging.
   */
  readonly keepalive?: { readonly intervalMs: number; readonly countMax: number };
  /** Finds a free port on 127.0.0.1 for the SSH forward (injectable so tests can cause a clash). */
  readonly getPort?: () => Promise<number>;
  readonly env?: NodeJS.ProcessEnv;
  readonly signal?: AbortSignal;
  /** Progress lines for the CLI (verbose mode). */
  readonly log?: (line: string) => void;
  /**
   * Start from the appliance snapshot (restore a saved, booted guest; the first start saves one). Default: on,
   * unless VMDIB_NO_SNAPSHOT=1 or the run's shares and disks do not fit the snapshot machine (then: cold boot).
   */
  readonly snapshot?: boolean;
}

export interface MachineExecOptions extends Omit<ExecOptions, "stdout" | "stderr"> {
  readonly stdout?: Writable;
  readonly stderr?: Writable;
}

export interface Machine {
  /** QEMU's process id (setpriv execs QEMU, so it is the same process). */
  readonly pid: number;
  readonly sshPort: number;
  readonly runDir: string;
  readonly serialLog: string;
  /** QEMU's QMP socket (in the run directory). */
  readonly qmpSocket: string;
  readonly accel: AccelVerdict;
  /** Milliseconds from spawning QEMU to the guest's ready marker, and the guest's own uptime then (s). */
  readonly readyMs: number;
  readonly guestUptimeAtReady: number;
  /** How it started: restored from the appliance snapshot, cold boot that saved one, or plain cold boot. */
  readonly start: StartKind;
  /** Settles when QEMU exits, however. */
  readonly exited: Promise<QemuExit>;
  /** Run a command as root; resolves with its exit code (128+n when killed by signal n). */
  exec(command: string | readonly string[], opts?: MachineExecOptions): Promise<number>;
  /** Interactive shell on a pty; resolves with the shell's exit code. */
  shell(opts: ShellOptions): Promise<number>;
  /** Shut down (poweroff → wait → SIGTERM → SIGKILL) and remove the run directory; idempotent. */
  stop(): Promise<void>;
}

export type StartKind = "restored" | "saved" | "cold";

const RUN_PREFIX = "run-";
/** How long the polite poweroff and SIGTERM each get before the next rung of the ladder. */
const POWEROFF_WAIT_MS = 10_000;
const SIGTERM_WAIT_MS = 5_000;
/** QEMU says this when the forwarded port was taken between get-port and its bind. */
const PORT_CLASH = /Could not set up host forwarding rule/;

/** Where run directories live: one 0700 parent per user, so stale ones can be found and swept. */
function runBase(env: NodeJS.ProcessEnv): string {
  return join(env.TMPDIR || tmpdir(), `vmdib-${userInfo().uid}`);
}

/**
 * Remove run directories whose controller died without cleaning up (SIGKILL leaves them behind; the guest's
 * lifeline has already stopped their QEMU). A directory whose controller or QEMU still runs is left alone.
 */
export async function sweepStaleRunDirs(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const base = runBase(env);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(base);
  } catch {
    return removed;
  }
  for (const name of names.filter((n) => n.startsWith(RUN_PREFIX))) {
    const dir = join(base, name);
    const pids = await Promise.all(
      ["controller.pid", "qemu.pid"].map((f) =>
        readFile(join(dir, f), "utf8").then(
          (t) => Number.parseInt(t, 10),
          () => Number.NaN,
        ),
      ),
    );
    if (Number.isNaN(pids[0] ?? Number.NaN)) continue; // still being created, or not ours
    if (pids.some((p) => p !== undefined && !Number.isNaN(p) && pidAlive(p))) continue;
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

async function findSetpriv(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (process.platform !== "linux") return undefined;
  for (const dir of (env.PATH ?? "/usr/bin:/bin").split(":")) {
    if (!dir) continue;
    try {
      await access(join(dir, "setpriv"), fsc.X_OK);
      return join(dir, "setpriv");
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function exitCodeOf(status: { code: number | null; signal: string | null }): number {
  if (status.code !== null) return status.code;
  // ssh2 reports the name as sent ("KILL") or prefixed ("SIGKILL") depending on version: accept both.
  const name = status.signal?.startsWith("SIG") ? status.signal : `SIG${status.signal}`;
  const n = status.signal ? (osc.signals as Record<string, number>)[name] : undefined;
  return 128 + (n ?? 1);
}

function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(undefined), ms);
    p.then((v) => {
      clearTimeout(t);
      resolve(v);
    });
  });
}

type Qemu = ChildProcessByStdio<Writable, Readable, Readable>;

/** Boot the appliance and connect to it. On any failure everything made so far is undone before the error. */
export async function startAppliance(opts: StartOptions): Promise<Machine> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  const stack = new CleanupStack();
  try {
    return await startOn(stack, opts, env, log);
  } catch (err) {
    await stack.unwind();
    throw err;
  }
}

async function startOn(
  stack: CleanupStack,
  opts: StartOptions,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<Machine> {
  opts.signal?.throwIfAborted();
  await sweepStaleRunDirs(env).then((gone) => {
    for (const d of gone) log(`removed stale run directory ${d}`);
  });

  // The run directory: 0700, holds keys (0600), the fw_cfg config, the serial log and the pid files.
  const base = runBase(env);
  await mkdir(base, { recursive: true, mode: 0o700 });
  const runDir = await mkdtemp(join(base, RUN_PREFIX));
  stack.push("remove run directory", () => rm(runDir, { recursive: true, force: true }));
  await writeFile(join(runDir, "controller.pid"), `${process.pid}\n`);
  if (opts.debug) {
    // Debugging: keep the whole console of every run, not only of failed ones.
    stack.push("keep serial log", () => preserveSerialLog(join(runDir, "serial.log"), env, undefined));
  }

  const keys = generateKeys();

  const shares: Share[] = (opts.shares ?? []).map((s, i) => ({
    tag: s.tag ?? `s${i}`,
    hostPath: s.hostPath,
    guestPath: s.guestPath,
    readonly: s.readonly,
  }));
  const disks: Disk[] = [];
  for (const d of opts.disks ?? []) {
    const path = d.path ?? join(runDir, `disk-${d.serial}.img`);
    if (d.sizeBytes !== undefined) {
      // Sparse: ftruncate allocates nothing; blocks appear only where the guest writes.
      const fh = await open(path, "a");
      if ((await fh.stat()).size === 0) await fh.truncate(d.sizeBytes);
      await fh.close();
    }
    disks.push({ path, serial: d.serial, format: d.format ?? "raw" });
  }

  const serialLog = join(runDir, "serial.log");
  const setpriv = opts.pdeathsig === false ? undefined : await findSetpriv(env);
  const readyTimeoutMs = opts.readyTimeoutMs ?? (Number(env.VMDIB_READY_TIMEOUT) * 1000 || 180_000);
  const memoryMiB = opts.memoryMiB ?? 2048;
  const cpus = opts.cpus ?? hostCpus();
  const kernel = bootKernel(opts.appliance);

  // Snapshot start: the fixed machine (slots) when this run fits it, else the classic cold boot.
  const slots = await snapshotMachine(opts, env, runDir, shares, disks, log);
  const snap = slots
    ? await snapshotFiles({
        kernel,
        initrd: opts.appliance.initrd,
        qemuVersion: opts.qemu.version,
        accel: opts.accel.accel,
        cpus,
        memoryMiB,
        cmdline: kernelCmdline({}),
      }).catch(() => undefined)
    : undefined;
  await writeFile(
    join(runDir, "config"),
    slots ? "snapshot=1\n" : guestConfigText({ shares }, opts.debug ? { debug: "1" } : {}),
  );
  if (!slots) {
    const secret = (name: string, text: string) => writeFile(join(runDir, name), text, { mode: 0o600 });
    await secret("ssh_host_ed25519_key", keys.hostPrivate);
    await secret("authorized_keys", `${keys.clientPublic}\n`);
  }
  const runConfig = () =>
    runConfigText({
      mounts: shares.map((s, slot) => ({ slot, guestPath: s.guestPath, readonly: s.readonly })),
      authorizedKey: keys.clientPublic,
      hostKey: keys.hostPrivate,
      time: Date.now() / 1000,
      seed: randomBytes(32).toString("hex"),
      debug: opts.debug === true,
    });

  type Mode = "cold" | "save" | "restore";
  const launch = async (mode: Mode): Promise<Launched> => {
    for (let attempt = 1; ; attempt++) {
      // get-port's answer can be stale by the time QEMU binds (another process, another vmdib): QEMU then exits
      // at once with PORT_CLASH and we try again with a new port.
      const sshPort = await (opts.getPort ?? (() => getPort({ host: "127.0.0.1" })))();
      const qmpSocket = join(runDir, "qmp.sock");
      await rm(qmpSocket, { force: true });
      const spec: MachineSpec = {
        kernel,
        initrd: opts.appliance.initrd,
        memoryMiB,
        cpus,
        sshPort,
        serialLog,
        shares: slots?.shares ?? shares,
        disks: slots?.disks ?? disks,
        fwCfg: slots
          ? { config: join(runDir, "config") }
          : {
              config: join(runDir, "config"),
              authorized_keys: join(runDir, "authorized_keys"),
              ssh_host_ed25519_key: join(runDir, "ssh_host_ed25519_key"),
            },
        pidFile: join(runDir, "qemu.pid"),
        // QMP in every mode: snapshots are saved and restored through it, and a lost SSH connection is diagnosed
        // by asking QEMU whether the guest still runs.
        qmpSocket,
        ...(mode === "restore" && snap ? { incoming: incomingArgv(snap)[1] } : {}),
      };
      const argv = qemuArgv(spec, { accel: opts.accel.accel, cpus: hostCpus() });
      const [cmd, args] = setpriv
        ? [setpriv, ["--pdeathsig", "SIGKILL", "--", opts.qemu.binary, ...argv]]
        : [opts.qemu.binary, argv];
      log(
        `${mode === "restore" ? "restoring the appliance snapshot in" : "starting"} QEMU (${opts.accel.accel}), ssh forwarded from 127.0.0.1:${sshPort}`,
      );
      const t0 = performance.now();
      // detached: QEMU in its own process group, so a Ctrl-C on the user's terminal reaches only vmdib, which then
      // stops the build in order (exit 130) instead of QEMU quitting under the running step. Parent death is still
      // covered by --pdeathsig and the lifeline.
      const child: Qemu = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], cwd: runDir, detached: true });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-8192);
      });
      const exited = new Promise<QemuExit>((resolve) => {
        child.on("close", (code, signal) => resolve({ code, signal, stderr }));
        child.on("error", (err) => resolve({ code: null, signal: null, stderr: `${stderr}${err.message}\n` }));
      });
      // Last resort if this process exits without stop() (an uncaught error): take QEMU down synchronously.
      const onProcessExit = () => child.kill("SIGKILL");
      process.on("exit", onProcessExit);
      const state = { ready: false };
      const stopQemu = stack.push("stop QEMU", async () => {
        await shutdownLadder(child, exited, log, state.ready);
        process.off("exit", onProcessExit);
      });
      // EPIPE on the lifeline once QEMU is gone is expected, not an error.
      child.stdin.on("error", () => {});
      const wait = (marker: string, timeoutMs: number) =>
        waitForReady({
          lifeline: child.stdout,
          exited,
          timeoutMs,
          serialLog,
          accelNote: `${opts.accel.accel} (${opts.accel.reason})`,
          marker,
          ...(opts.signal ? { signal: opts.signal } : {}),
        });

      let guestUptimeAtReady: number;
      try {
        if (mode === "restore") {
          await resumeRestored(qmpSocket, exited);
          // The guest waits at its snapshot point for this.
          child.stdin.write(runConfig());
          // A restored guest is ready in seconds; one that is not (a damaged stream QEMU accepted) is not waited
          // for as long as a boot: the caller falls back to a cold boot.
          guestUptimeAtReady = await wait(READY_MARKER, Math.min(readyTimeoutMs, 60_000));
        } else if (mode === "save" && snap) {
          const at = await wait(SNAPSHOT_MARKER, readyTimeoutMs);
          const kept = await saveHere(qmpSocket, snap, at, log);
          // Runs while the guest works; stop() waits for it, so a short run still leaves its snapshot behind.
          if (kept) stack.push("keep the appliance snapshot", () => kept);
          child.stdin.write(runConfig());
          guestUptimeAtReady = await wait(READY_MARKER, readyTimeoutMs);
        } else {
          guestUptimeAtReady = await wait(READY_MARKER, readyTimeoutMs);
        }
      } catch (err) {
        // A restore notices QEMU's exit through QMP first: give the exit a moment to arrive.
        const exit = await within(exited, mode === "restore" ? 2_000 : 0);
        if (exit && PORT_CLASH.test(exit.stderr) && attempt < 5) {
          log(`port ${sshPort} was taken before QEMU could bind it; retrying with another`);
          await stopQemu();
          continue;
        }
        if (mode === "restore") {
          await stopQemu();
          if (!opts.signal?.aborted) await preserveSerialLog(serialLog, env, err);
          throw err;
        }
        // An interrupt is not a guest failure: nothing to point the user at.
        if (!opts.signal?.aborted) await preserveSerialLog(serialLog, env, err);
        throw err;
      }
      state.ready = true;
      const readyMs = performance.now() - t0;
      const start: StartKind = mode === "restore" ? "restored" : mode === "save" ? "saved" : "cold";
      return { child, exited, pid: child.pid ?? -1, sshPort, readyMs, guestUptimeAtReady, start };
    }
  };

  let booted: Launched | undefined;
  if (snap) {
    const problem = await snapshotProblem(snap);
    if (problem === undefined) {
      try {
        booted = await launch("restore");
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        log(`could not restore the appliance snapshot (${oneLine(err)}); cold booting instead`);
        await discardSnapshot(snap).catch(() => {});
      }
    } else if (problem !== "none saved yet") {
      log(`appliance snapshot unusable (${problem}); cold booting and saving a new one`);
      await discardSnapshot(snap).catch(() => {});
    } else {
      log("no appliance snapshot for this machine yet: cold booting once and saving one");
    }
  }
  booted ??= await launch(snap ? "save" : "cold");
  const { child, exited, pid, sshPort, readyMs, guestUptimeAtReady, start } = booted;
  log(`guest ready after ${(readyMs / 1000).toFixed(2)} s (guest uptime ${guestUptimeAtReady} s)`);
  // The lifeline must keep flowing: unread output would eventually block the guest's writes to the port.
  child.stdout.resume();

  const ssh = await SshSession.connect({
    port: sshPort,
    keys,
    ...(opts.keepalive
      ? { keepaliveIntervalMs: opts.keepalive.intervalMs, keepaliveCountMax: opts.keepalive.countMax }
      : {}),
  }).catch(async (err: unknown) => {
    await preserveSerialLog(serialLog, env, err);
    throw new VmdibError("could not log in to the appliance over SSH", {
      cause: err,
      context: await tailFile(serialLog),
      hint: `the guest reported ready but SSH on 127.0.0.1:${sshPort} failed: ${err instanceof Error ? err.message : String(err)}`,
    });
  });
  stack.push("close SSH", () => ssh.close());

  return makeMachine({
    stack,
    child,
    pid,
    exited,
    ssh,
    sshPort,
    runDir,
    serialLog,
    opts,
    env,
    readyMs,
    guestUptimeAtReady,
    start,
  });
}

interface Launched {
  readonly child: Qemu;
  readonly exited: Promise<QemuExit>;
  readonly pid: number;
  readonly sshPort: number;
  readonly readyMs: number;
  readonly guestUptimeAtReady: number;
  readonly start: StartKind;
}

/**
 * Wait until QEMU has loaded the saved state, then resume the guest: it was saved paused, and a loaded VM keeps the
 * run state it was saved in.
 */
async function resumeRestored(qmpSocket: string, exited: Promise<QemuExit>, timeoutMs = 60_000): Promise<void> {
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const connecting = QmpClient.connect(qmpSocket);
  const qmp = await Promise.race([
    connecting,
    exited.then((e) => {
      connecting.then((q) => q.close()).catch(() => {});
      throw new Error(`QEMU could not load the snapshot (${describeExit(e)}: ${e.stderr.trim().split("\n").pop()})`);
    }),
  ]);
  try {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const { status } = await qmp.execute<{ status: string }>("query-status");
      if (status !== "inmigrate") break;
      if (gone) throw new Error("QEMU exited while loading the snapshot");
      if (Date.now() > end) throw new Error(`QEMU had not loaded the snapshot after ${timeoutMs / 1000} s`);
      await sleep(10);
    }
    await qmp.execute("cont");
  } finally {
    qmp.close();
  }
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";
}

/**
 * Save the guest paused at its snapshot point, then resume it: this boot goes on as the run's VM. Any failure is one
 * log line (the run continues cold). Resolves once the guest runs again, with the background work that hashes the
 * stream and moves it into place (never rejects).
 */
async function saveHere(
  qmpSocket: string,
  snap: SnapshotFiles,
  guestUptime: number,
  log: (line: string) => void,
): Promise<Promise<void> | undefined> {
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(qmpSocket);
    const t0 = performance.now();
    const saved = await saveSnapshot(qmp, snap).catch((err: unknown) => {
      log(`could not save the appliance snapshot (${oneLine(err)}); this run goes on from its cold boot`);
      return undefined;
    });
    await qmp.execute("cont");
    if (saved) {
      log(
        `saved the appliance snapshot at guest uptime ${guestUptime} s (${Math.round(saved.bytes / 2 ** 20)} MiB in ${((performance.now() - t0) / 1000).toFixed(2)} s)`,
      );
      return saved.commit().catch((err: unknown) => log(`could not keep the appliance snapshot (${oneLine(err)})`));
    }
    return undefined;
  } catch (err) {
    log(`could not save the appliance snapshot (${oneLine(err)}); this run goes on from its cold boot`);
    await qmp?.execute("cont").catch(() => {});
    return undefined;
  } finally {
    qmp?.close();
  }
}

/**
 * The fixed machine every snapshot start uses, or undefined (cold boot) when snapshots are off or the run does not
 * fit: SNAPSHOT_SLOTS 9p slots (tags s0.., unused ones an empty read-only directory) and one raw disk slot of
 * SNAPSHOT_DISK_BYTES (a sparse placeholder when the run has no disk).
 */
async function snapshotMachine(
  opts: StartOptions,
  env: NodeJS.ProcessEnv,
  runDir: string,
  shares: readonly Share[],
  disks: readonly Disk[],
  log: (line: string) => void,
): Promise<{ shares: Share[]; disks: Disk[] } | undefined> {
  if (opts.snapshot === false || env.VMDIB_NO_SNAPSHOT === "1") return undefined;
  const misfit =
    shares.length > SNAPSHOT_SLOTS
      ? `more than ${SNAPSHOT_SLOTS} shares`
      : opts.shares?.some((s) => s.tag !== undefined)
        ? "a share with its own 9p tag"
        : disks.length > 1
          ? "more than one disk"
          : disks[0] && disks[0].format !== "raw"
            ? "a qcow2 disk"
            : disks[0] && (await stat(disks[0].path).catch(() => undefined))?.size !== SNAPSHOT_DISK_BYTES
              ? "a disk whose size is not the image disk's"
              : undefined;
  if (misfit) {
    log(`no snapshot start for this run (${misfit}); cold booting`);
    return undefined;
  }
  const empty = join(runDir, "empty");
  await mkdir(empty, { mode: 0o500 });
  const slotShares: Share[] = [];
  for (let i = 0; i < SNAPSHOT_SLOTS; i++) {
    const s = shares[i];
    slotShares.push(
      s
        ? { ...s, tag: `s${i}` }
        : { tag: `s${i}`, hostPath: empty, guestPath: `/run/vmdib/unused-s${i}`, readonly: true },
    );
  }
  let disk = disks[0];
  if (!disk) {
    const path = join(runDir, "placeholder.img");
    const fh = await open(path, "w", 0o600);
    await fh.truncate(SNAPSHOT_DISK_BYTES);
    await fh.close();
    disk = { path, serial: "vmdib-placeholder", format: "raw" };
  }
  return { shares: slotShares, disks: [disk] };
}

/**
 * Poweroff (close the lifeline: the guest syncs and powers off) → wait → SIGTERM → wait → SIGKILL. A guest that
 * never said ready is not watching its lifeline yet (or never will): it goes straight to SIGTERM.
 */
async function shutdownLadder(
  child: Qemu,
  exited: Promise<QemuExit>,
  log: (line: string) => void,
  polite: boolean,
): Promise<void> {
  if (await within(exited, 0)) return;
  child.stdin.end();
  if (polite) {
    if (await within(exited, POWEROFF_WAIT_MS)) return;
    log(`QEMU (pid ${child.pid}) did not power off within ${POWEROFF_WAIT_MS / 1000} s; sending SIGTERM`);
  }
  child.kill("SIGTERM");
  if (await within(exited, SIGTERM_WAIT_MS)) return;
  log(`QEMU (pid ${child.pid}) ignored SIGTERM; sending SIGKILL`);
  child.kill("SIGKILL");
  await exited;
}

/** The guest's run state as QEMU reports it over QMP ("running", "paused", ...), or undefined if QEMU does not answer. */
async function vcpuStatus(qmpSocket: string): Promise<string | undefined> {
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(qmpSocket, 2_000);
    return (await qmp.execute<{ status: string }>("query-status")).status;
  } catch {
    return undefined;
  } finally {
    qmp?.close();
  }
}

/** Keep a copy of a failed run's serial console where the user can read it after the run dir is gone. */
async function preserveSerialLog(serialLog: string, env: NodeJS.ProcessEnv, err: unknown): Promise<void> {
  try {
    const dir = join(cacheDir(env), "logs");
    await mkdir(dir, { recursive: true });
    const dest = join(dir, "last-serial.log");
    // Not a copy: the console may show a secret (an element echoing a key to /dev/console, or with debug on, the
    // guest's shell trace of its injected host key), and the kept log outlives the run; only the owner reads it.
    await writeFile(dest, redactLog(await readFile(serialLog, "utf8")), { mode: 0o600 });
    await chmod(dest, 0o600);
    if (err instanceof VmdibError && !err.context.some((l) => l.includes(dest))) {
      err.context.push(`(full serial console: ${dest})`);
    }
  } catch {
    // the log may not exist (QEMU never started); the error itself says why
  }
}

interface MachineParts {
  readonly stack: CleanupStack;
  readonly child: Qemu;
  readonly pid: number;
  readonly exited: Promise<QemuExit>;
  readonly ssh: SshSession;
  readonly sshPort: number;
  readonly runDir: string;
  readonly serialLog: string;
  readonly opts: StartOptions;
  readonly env: NodeJS.ProcessEnv;
  readonly readyMs: number;
  readonly guestUptimeAtReady: number;
  readonly start: StartKind;
}

function makeMachine(p: MachineParts): Machine {
  let stopping: Promise<void> | undefined;

  /** Turn a lost connection into the user's story: did QEMU die (and what did the console say)? */
  async function explain(err: unknown, what: string): Promise<never> {
    if (!(err instanceof ConnectionLost)) throw err;
    const exit = await within(p.exited, 3_000);
    const tail = await tailFile(p.serialLog);
    const e = exit
      ? new VmdibError(`the appliance VM died while running ${what}: ${describeExit(exit)}`, {
          cause: err,
          context: tail.length ? ["serial console:", ...tail] : [],
          hint: "the guest's console is above; if the guest ran out of memory or disk, give it more",
        })
      : tail.some((l) => /Out of memory: Killed process/.test(l))
        ? new VmdibError(`the appliance ran out of memory while running ${what}`, {
            cause: err,
            context: ["serial console:", ...tail],
            hint: "give the helper VM more memory with --memory",
          })
        : await lostConnection(err, what, tail);
    await preserveSerialLog(p.serialLog, p.env, e);
    throw e;
  }

  /** QEMU still runs: tell a guest cut off from its network from a QEMU that is itself frozen (asked over QMP). */
  async function lostConnection(err: unknown, what: string, tail: readonly string[]): Promise<VmdibError> {
    const keepalive = p.opts.keepalive ?? { intervalMs: 5_000, countMax: 12 };
    const silent = Math.round((keepalive.intervalMs * keepalive.countMax) / 1000);
    const status = await within(vcpuStatus(join(p.runDir, "qmp.sock")), 3_000);
    const why =
      status === undefined
        ? "QEMU itself stopped responding (its process is stopped or stuck)"
        : `QEMU still runs the guest (${status}), but nothing came back over its network`;
    // ssh2 names the keepalive timeout as the connection's error; any other loss says its own reason.
    const silence = /keepalive/i.test(oneLine(err))
      ? `no answer to SSH keepalives for ${silent} s`
      : `the connection ended: ${oneLine(err)}`;
    return new VmdibError(`lost the SSH connection to the appliance while running ${what}`, {
      cause: err,
      context: [`${silence}; ${why}`, ...(tail.length ? ["serial console:", ...tail] : [])],
      hint: "the guest stopped answering (its console is above) and the helper VM is stopped; run the command again, and if it happens again keep the console log named above",
    });
  }

  return {
    pid: p.pid,
    sshPort: p.sshPort,
    runDir: p.runDir,
    serialLog: p.serialLog,
    qmpSocket: join(p.runDir, "qmp.sock"),
    accel: p.opts.accel,
    readyMs: p.readyMs,
    guestUptimeAtReady: p.guestUptimeAtReady,
    start: p.start,
    exited: p.exited,
    async exec(command, opts = {}) {
      const line = typeof command === "string" ? command : shellJoin(command);
      try {
        return exitCodeOf(await p.ssh.exec(line, opts));
      } catch (err) {
        return await explain(err, `\`${line.length > 60 ? `${line.slice(0, 57)}...` : line}\``);
      }
    },
    async shell(opts) {
      try {
        return exitCodeOf(await p.ssh.shell(opts));
      } catch (err) {
        return await explain(err, "the shell");
      }
    },
    stop() {
      stopping ??= p.stack.unwind().then((errors) => {
        if (errors[0]) throw errors[0];
      });
      return stopping;
    },
  };
}
