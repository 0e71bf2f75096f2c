// Serverless-style start of the appliance: a saved, already-booted guest (a QEMU migration stream in the appliance's
// cache directory, invalidated with it) is restored instead of booting a kernel. The device set is fixed (SLOTS 9p
// shares, one 2 TiB disk) so that every restore matches the saved machine; backends (directories, disk files, ports)
// are not in the stream and are the run's own. Per-run keys, mounts and the clock reach the guest over the lifeline.
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pidAlive } from "../lock.js";
import { shellQuote } from "../shell.js";
import { sha256File } from "./appliance/archive.js";
import { type Accel, accelArgv } from "./qemu.js";
import type { QmpClient } from "./qmp.js";

/** 9p share slots every snapshot machine has (tags s0..s7); a run with more shares boots cold. */
export const SNAPSHOT_SLOTS = 8;
/** The one disk slot's size: the build's image disk (sparse); runs without a disk get a sparse placeholder. */
export const SNAPSHOT_DISK_BYTES = 2 * 1024 ** 4;
/** The guest prints this on the lifeline when it reached the snapshot point; must match guest/init. */
export const SNAPSHOT_MARKER = "VMDIB-SNAPSHOT";
/** Bump when the saved machine's shape (qemu.ts argv, guest/init's snapshot point) changes incompatibly. */
const SNAPSHOT_FORMAT = 2;
/** Snapshots kept per appliance directory (one per machine shape: memory, CPUs, accelerator); ~300 MB each. */
const KEEP_SNAPSHOTS = 2;

export interface SnapshotFiles {
  /** The migration stream. */
  readonly state: string;
  /** JSON: sha256, size, mtime and inode of the stream, written after it is complete. */
  readonly meta: string;
  readonly key: string;
}

interface SnapshotMeta {
  readonly format: number;
  readonly sha256: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
}

export interface SnapshotShape {
  readonly kernel: string;
  readonly initrd: string;
  readonly qemuVersion: string;
  readonly accel: Accel;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly cmdline: string;
}

/**
 * Where the snapshot for this machine shape lives: next to the appliance's initrd (so pruning or rebuilding the
 * appliance takes it along), keyed by the appliance files' identity, the QEMU version and the machine's shape.
 */
export async function snapshotFiles(shape: SnapshotShape): Promise<SnapshotFiles> {
  const ids = await Promise.all(
    [shape.kernel, shape.initrd].map(async (f) => {
      const st = await stat(f);
      return `${f} ${st.size} ${st.mtimeMs} ${st.ino}`;
    }),
  );
  const key = createHash("sha256")
    .update(
      JSON.stringify({
        format: SNAPSHOT_FORMAT,
        ids,
        qemu: shape.qemuVersion,
        accel: accelArgv(shape.accel),
        cpus: shape.cpus,
        memoryMiB: shape.memoryMiB,
        cmdline: shape.cmdline,
        slots: SNAPSHOT_SLOTS,
        disk: SNAPSHOT_DISK_BYTES,
      }),
    )
    .digest("hex")
    .slice(0, 16);
  const dir = dirname(shape.initrd);
  return { key, state: join(dir, `snapshot-${key}.vmstate`), meta: join(dir, `snapshot-${key}.json`) };
}

/**
 * Is the snapshot there and intact? The stream is hashed against its meta once; afterwards its size, mtime and
 * inode stand in for the hash (a truncated or rewritten file changes them). Returns why not, or undefined when usable.
 */
export async function snapshotProblem(files: SnapshotFiles): Promise<string | undefined> {
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(await readFile(files.meta, "utf8")) as SnapshotMeta;
  } catch {
    return "none saved yet";
  }
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(files.state);
  } catch {
    return "its state file is missing";
  }
  if (meta.format !== SNAPSHOT_FORMAT) return "it was saved by another vmdib";
  if (st.size !== meta.size) return `its size changed (${st.size}, saved ${meta.size})`;
  if (st.mtimeMs === meta.mtimeMs && st.ino === meta.ino) return undefined;
  if ((await sha256File(files.state)) !== meta.sha256) return "it does not match its sha256";
  // Intact but touched (copied, restored from a backup): remember the new identity.
  await writeMeta(files, meta.sha256).catch(() => {});
  return undefined;
}

async function writeMeta(files: SnapshotFiles, sha256: string): Promise<void> {
  const st = await stat(files.state);
  const meta: SnapshotMeta = { format: SNAPSHOT_FORMAT, sha256, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
  const tmp = `${files.meta}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  await writeFile(tmp, `${JSON.stringify(meta)}\n`);
  await rename(tmp, files.meta);
}

/** Remove a snapshot (damaged, or QEMU could not restore it): the next start saves a fresh one. */
export async function discardSnapshot(files: SnapshotFiles): Promise<void> {
  await rm(files.meta, { force: true });
  await rm(files.state, { force: true });
}

/** The argv tail that makes QEMU load a saved state instead of booting (the stream is read by a shell command). */
export function incomingArgv(files: SnapshotFiles): string[] {
  return ["-incoming", `exec:cat ${shellQuote(files.state)}`];
}

/** bytes/s: far above what a disk takes, so the file is the only limit. */
const UNTHROTTLED = 2 ** 35;

/**
 * Save the running guest (stopped at its snapshot point) into the snapshot files. The VM is left paused: the caller
 * resumes it (`cont`) and carries on with this very boot. Resolves with `commit`, which hashes the stream and moves
 * it into place (run it while the guest works; it must not delay the start).
 */
export async function saveSnapshot(
  qmp: QmpClient,
  files: SnapshotFiles,
  timeoutMs = 120_000,
): Promise<{ commit: () => Promise<void>; bytes: number }> {
  const tmp = `${files.state}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  await qmp.execute("stop");
  try {
    // QEMU throttles a migration to 128 MiB/s by default (meant for a live guest on a shared link): the stopped
    // appliance's ~450 MiB took 3.3 s to save, 0.47 s unthrottled.
    await qmp.execute("migrate-set-parameters", { "max-bandwidth": UNTHROTTLED });
    await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(tmp)}` });
    const end = Date.now() + timeoutMs;
    for (;;) {
      const info = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
      if (info.status === "completed") break;
      if (info.status === "failed" || info.status === "cancelled") {
        throw new Error(`QEMU could not save the VM: ${info["error-desc"] ?? info.status}`);
      }
      if (Date.now() > end) {
        await qmp.execute("migrate_cancel").catch(() => {});
        throw new Error(`saving the VM took longer than ${timeoutMs / 1000} s`);
      }
      await sleep(25);
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const bytes = (await stat(tmp)).size;
  return {
    bytes,
    commit: async () => {
      try {
        const sha256 = await sha256File(tmp);
        await rename(tmp, files.state);
        await writeMeta(files, sha256);
        await pruneSnapshots(dirname(files.state), basename(files.state));
      } finally {
        await rm(tmp, { force: true });
      }
    },
  };
}

/** Keep the KEEP_SNAPSHOTS newest snapshots of one appliance (each machine shape has its own). */
async function pruneSnapshots(dir: string, current: string): Promise<void> {
  const all = await readdir(dir);
  // Streams left by a controller that died while saving.
  for (const n of all) {
    const m = /^snapshot-[0-9a-f]+\.vmstate\.tmp-(\d+)-/.exec(n);
    if (m && !pidAlive(Number(m[1]))) await rm(join(dir, n), { force: true });
  }
  const names = all.filter((n) => /^snapshot-[0-9a-f]+\.vmstate$/.test(n));
  const dated = await Promise.all(
    names.map(async (n) => ({
      n,
      t: await stat(join(dir, n)).then(
        (s) => s.mtimeMs,
        () => 0,
      ),
    })),
  );
  dated.sort((a, b) => (a.n === current ? -1 : b.n === current ? 1 : b.t - a.t));
  for (const { n } of dated.slice(KEEP_SNAPSHOTS)) {
    await rm(join(dir, n.replace(/\.vmstate$/, ".json")), { force: true });
    await rm(join(dir, n), { force: true });
  }
}

export interface RunConfig {
  /** Slot index → guest mount point. */
  readonly mounts: readonly { readonly slot: number; readonly guestPath: string; readonly readonly: boolean }[];
  readonly authorizedKey: string;
  /** The SSH host private key (OpenSSH PEM): travels only over the local lifeline pipe. */
  readonly hostKey: string;
  /** Wall-clock time now (s since the epoch): the restored guest's clock is the snapshot's. */
  readonly time: number;
  /** Random bytes (hex) mixed into the guest's pool, so copies of one snapshot do not share random numbers. */
  readonly seed: string;
  readonly debug: boolean;
}

/** The lines the guest's read_run_config expects: key=value, ended by "end". Pure. */
export function runConfigText(c: RunConfig): string {
  const lines: string[] = [];
  for (const m of c.mounts) {
    if (!m.guestPath.startsWith("/") || /\s/.test(m.guestPath)) {
      throw new Error(`guest mount point '${m.guestPath}' must be absolute and without whitespace`);
    }
    lines.push(`mount=s${m.slot} ${m.guestPath} ${m.readonly ? "ro" : "rw"}`);
  }
  for (const k of c.authorizedKey.trim().split("\n")) lines.push(`authorized_key=${k}`);
  for (const k of c.hostKey.trim().split("\n")) lines.push(`host_key=${k}`);
  lines.push(`time=${Math.floor(c.time)}`, `seed=${c.seed}`);
  if (c.debug) lines.push("debug=1");
  if (lines.some((l) => /[\r\0]/.test(l) || l === "end")) throw new Error("run config line with a control character");
  return `${lines.join("\n")}\nend\n`;
}
