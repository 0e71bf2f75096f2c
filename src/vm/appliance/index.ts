// The appliance, content-addressed in the cache: ensureAppliance() resolves, reuses or builds it; listAppliances() reads
// what is cached. Key = hash(builder version, resolved package versions + hashes, appliance.yaml, guest/init).
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { VmdibError } from "../../errors.js";
import { withLock } from "../../lock.js";
import { redactUrl, resolveMirror } from "../../mirror.js";
import { cacheDir, GUEST_DIR } from "../../paths.js";
import {
  DEFAULT_KEYRING,
  fetchDebs,
  loadPackages,
  loadRelease,
  type OnEvent,
  sha256File,
  writeAtomic,
} from "./archive.js";
import { assembleAppliance } from "./build.js";
import { resolveClosure } from "./closure.js";
import { limitYoungGeneration, releaseGarbage } from "./memory.js";
import type { DebPackage, PackageIndex } from "./packages.js";
import { loadApplianceSpec } from "./spec.js";

export type { ApplianceEvent, OnEvent } from "./archive.js";

/** Bump when the assembly changes in a way that must invalidate cached appliances. */
export const BUILDER_VERSION = 5;

export interface ApplianceFile {
  /** File name inside the appliance directory. */
  file: string;
  size: number;
  sha256: string;
}

export interface ApplianceManifest {
  builderVersion: number;
  key: string;
  createdAt: string;
  mirror: string;
  suite: string;
  arch: string;
  /** Date of the signed InRelease the packages came from. */
  indexDate: string;
  packagesIndexSha256: string;
  kernel: ApplianceFile & { package: string; version: string; release: string };
  initrd: ApplianceFile & { compression: "none" };
  /** The uncompressed ELF kernel (PVH-bootable), when it could be extracted from the bzImage. */
  vmlinux?: ApplianceFile;
  /** size: of the .deb; initrdBytes: what it added to the initramfs after dropping docs etc. */
  packages: { name: string; version: string; sha256: string; size: number; initrdBytes?: number }[];
  /** Kernel modules in the initramfs, in load order (the guest loads them on demand; see `preload`). */
  modules: string[];
  /** Paths shipped by more than one package (the first one won). */
  conflicts: string[];
}

export interface Appliance {
  /** The cache directory holding kernel, initrd and manifest.json. */
  dir: string;
  /** Absolute path of the kernel image (bzImage). */
  kernel: string;
  /** Absolute path of the initramfs (newc cpio). */
  initrd: string;
  /** Absolute path of the uncompressed ELF kernel for QEMU's PVH direct boot (faster than the bzImage), if any. */
  vmlinux?: string;
  key: string;
  manifest: ApplianceManifest;
  /** True when an existing cached appliance was used. */
  reused: boolean;
}

export interface EnsureApplianceOptions {
  env: NodeJS.ProcessEnv;
  /** No network: use the cached index and .debs, or fail. */
  offline: boolean;
  /** Rebuild even if a cached appliance with the same key exists (its .debs are still reused). */
  noCache?: boolean;
  onEvent?: OnEvent;
  signal?: AbortSignal;
  /** Defaults to guest/ of the installed package (appliance.yaml and init are read from it). */
  guestDir?: string;
  /** Defaults to <guestDir>/init. */
  initPath?: string;
  /** Ask the mirror for a new index even if the cached one is recent (`vmdib appliance build` does). */
  refresh?: boolean;
}

function applianceRoot(cacheRoot: string): string {
  return join(cacheRoot, "appliance");
}

/** The kernel image package a kernel (meta-)package name stands for, e.g. linux-image-amd64 → linux-image-6.1.0-50-amd64. */
export function resolveKernelPackage(index: PackageIndex, name: string): DebPackage {
  const pkg = index.packages.get(name);
  if (!pkg) throw new VmdibError(`kernel package '${name}' is not in the archive index`);
  if (/^linux-image-\d/.test(pkg.name)) return pkg;
  const dep = pkg.depends
    .split(",")
    .map((d) => d.trim().split(/[\s(|]/)[0] ?? "")
    .find((d) => /^linux-image-\d/.test(d));
  const real = dep ? index.packages.get(dep) : undefined;
  if (!real) throw new VmdibError(`kernel meta-package '${name}' does not depend on a linux-image-<version> package`);
  return real;
}

/** The cache key of an appliance (pure). */
export function applianceKey(parts: {
  packages: DebPackage[];
  kernel: DebPackage;
  yaml: string;
  init: Buffer;
}): string {
  const h = createHash("sha256");
  h.update(`vmdib-appliance ${BUILDER_VERSION}\n`);
  for (const p of [...parts.packages, parts.kernel]) h.update(`${p.name} ${p.version} ${p.sha256}\n`);
  h.update(`yaml ${createHash("sha256").update(parts.yaml).digest("hex")}\n`);
  h.update(`init ${createHash("sha256").update(parts.init).digest("hex")}\n`);
  return h.digest("hex").slice(0, 16);
}

/** Stat facts of a verified file; when they still match, the file is not hashed again. */
interface VerifiedStamp {
  [file: string]: { size: number; mtimeMs: number; ino: number; sha256: string };
}

const STAMP = ".verified.json";

/**
 * Is the cached appliance in `dir` complete and uncorrupted? Returns its manifest, or why not. Kernel and initrd
 * are hashed against the manifest once; afterwards a stamp of their size, mtime and inode stands in for the hash
 * (a truncated or rewritten file changes those), unless `full` asks for the hash again.
 */
export async function checkAppliance(
  dir: string,
  full = false,
): Promise<{ manifest?: ApplianceManifest; problem?: string }> {
  let manifest: ApplianceManifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as ApplianceManifest;
  } catch {
    return { problem: "no readable manifest.json" };
  }
  if (!manifest?.kernel?.file || !manifest.initrd?.file || !Array.isArray(manifest.packages)) {
    return { problem: "manifest.json is incomplete" };
  }
  let stamp: VerifiedStamp = {};
  try {
    stamp = JSON.parse(await readFile(join(dir, STAMP), "utf8")) as VerifiedStamp;
  } catch {}
  let hashed = false;
  for (const f of [manifest.kernel, manifest.initrd, ...(manifest.vmlinux ? [manifest.vmlinux] : [])]) {
    const path = join(dir, f.file);
    if (!existsSync(path)) return { problem: `${f.file} is missing` };
    const st = await stat(path);
    if (st.size !== f.size) return { problem: `${f.file} has the wrong size (${st.size}, manifest says ${f.size})` };
    const s = stamp[f.file];
    if (!full && s && s.size === st.size && s.mtimeMs === st.mtimeMs && s.ino === st.ino && s.sha256 === f.sha256) {
      continue;
    }
    if ((await sha256File(path)) !== f.sha256) return { problem: `${f.file} does not match its sha256` };
    stamp[f.file] = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256: f.sha256 };
    hashed = true;
  }
  if (hashed) await writeAtomic(join(dir, STAMP), JSON.stringify(stamp)).catch(() => {}); // read-only cache: fine
  return { manifest };
}

/** Hash of everything that decides the resolution, so a warm start can skip parsing the Packages index. */
function resolutionInputs(parts: { mirror: string; release: string; yaml: string; init: Buffer }): string {
  const h = createHash("sha256");
  h.update(`vmdib-resolution ${BUILDER_VERSION}\n${parts.mirror}\n`);
  for (const x of [parts.release, parts.yaml, parts.init])
    h.update(`${createHash("sha256").update(x).digest("hex")}\n`);
  return h.digest("hex").slice(0, 24);
}

/**
 * The appliance for the current guest/ declaration: from the cache when its key matches and its files verify,
 * else built (downloading what the .deb cache lacks). Safe under concurrent callers: each builds in its own temp
 * directory and renames it into place; the loser of a race uses the winner's result.
 */
export async function ensureAppliance(opts: EnsureApplianceOptions): Promise<Appliance> {
  const { env, offline, onEvent, signal } = opts;
  limitYoungGeneration(); // a cold appliance streams ~500 MB through the controller: see memory.ts
  const guestDir = opts.guestDir ?? GUEST_DIR;
  const spec = loadApplianceSpec(guestDir);
  const initPath = opts.initPath ?? join(guestDir, "init");
  let init: Buffer;
  try {
    init = await readFile(initPath);
  } catch (err) {
    throw new VmdibError(`the appliance's init script ${initPath} is missing`, {
      cause: err,
      hint: "guest/init is part of vmdib; reinstall it, or pass another init with --init FILE",
    });
  }
  const cacheRoot = cacheDir(env);
  const mirror = resolveMirror(env);
  const archive = {
    mirror,
    suite: spec.suite,
    arch: spec.arch,
    cacheRoot,
    offline,
    keyring: env.VMDIB_KEYRING || DEFAULT_KEYRING,
    ...(signal ? { signal } : {}),
    ...(onEvent ? { onEvent } : {}),
  };
  let t0 = Date.now();
  const release = await loadRelease({ ...archive, refresh: opts.refresh ?? false });
  const root = applianceRoot(cacheRoot);
  // Warm path: the same signed index + declaration resolved before to a key whose appliance is intact.
  const resolvedFile = join(
    root,
    ".resolved",
    `${resolutionInputs({ mirror, release: release.signedText, yaml: spec.text, init })}.json`,
  );
  if (!opts.noCache && existsSync(resolvedFile)) {
    const { key } = JSON.parse(await readFile(resolvedFile, "utf8")) as { key: string };
    const dir = join(root, key);
    const check = existsSync(dir) ? await checkAppliance(dir) : { problem: "missing" };
    if (check.manifest) {
      onEvent?.({ type: "cache-hit", key, dir });
      return toAppliance(dir, check.manifest, true);
    }
    if (check.problem !== "missing") {
      onEvent?.({ type: "warning", message: `cached appliance ${key} is damaged (${check.problem}); rebuilding it` });
    }
  }

  // Resolve in a helper whose scope ends here: the ~150 MB parsed index becomes garbage before assembly starts.
  const { packages, kernelPkg, indexDate, packagesSha256 } = await resolveAll(archive, release, spec);
  const key = applianceKey({ packages, kernel: kernelPkg, yaml: spec.text, init });
  onEvent?.({
    type: "step",
    message: `resolved ${packages.length} packages + ${kernelPkg.name}, key ${key}`,
    ms: Date.now() - t0,
  });
  await writeAtomic(resolvedFile, `${JSON.stringify({ key })}\n`);

  const dir = join(root, key);
  if (!opts.noCache && existsSync(dir)) {
    const check = await checkAppliance(dir);
    if (check.manifest) {
      onEvent?.({ type: "cache-hit", key, dir });
      return toAppliance(dir, check.manifest, true);
    }
    onEvent?.({ type: "warning", message: `cached appliance ${key} is damaged (${check.problem}); rebuilding it` });
  }

  // One process builds a given key; concurrent callers wait and then use its result.
  await mkdir(root, { recursive: true });
  return await withLock(
    join(root, `.lock-${key}`),
    async () => {
      if (!opts.noCache && existsSync(dir)) {
        const check = await checkAppliance(dir);
        if (check.manifest) {
          onEvent?.({ type: "cache-hit", key, dir });
          return toAppliance(dir, check.manifest, true);
        }
      }
      t0 = Date.now();
      releaseGarbage(); // the parsed index, before the .debs are hashed and unpacked
      const debs = await fetchDebs([...packages, kernelPkg], archive);
      onEvent?.({ type: "step", message: "packages fetched and verified", ms: Date.now() - t0 });
      const kernelDeb = debs.find((d) => d.pkg.name === kernelPkg.name);
      if (!kernelDeb) throw new Error("kernel package missing after fetch");

      await mkdir(root, { recursive: true });
      const tmp = join(root, `.tmp-${key}-${process.pid}-${randomBytes(4).toString("hex")}`);
      await mkdir(tmp);
      try {
        t0 = Date.now();
        const indexTime = Date.parse(indexDate);
        const result = await assembleAppliance({
          debs: debs.filter((d) => d !== kernelDeb),
          kernelDeb,
          modules: spec.modules,
          preload: spec.preload,
          drop: spec.drop,
          kernelCacheDir: join(cacheRoot, "kernels"),
          init,
          mtime: Number.isFinite(indexTime) ? Math.floor(indexTime / 1000) : 0,
          outDir: tmp,
          ...(onEvent ? { onEvent } : {}),
          ...(signal ? { signal } : {}),
        });
        onEvent?.({ type: "step", message: `initramfs assembled (${result.initrdBytes} bytes)`, ms: Date.now() - t0 });
        const fileInfo = async (path: string, file: string): Promise<ApplianceFile> => ({
          file,
          size: (await stat(path)).size,
          sha256: await sha256File(path),
        });
        const manifest: ApplianceManifest = {
          builderVersion: BUILDER_VERSION,
          key,
          createdAt: new Date().toISOString(),
          mirror: redactUrl(mirror),
          suite: spec.suite,
          arch: spec.arch,
          indexDate,
          packagesIndexSha256: packagesSha256,
          kernel: {
            ...(await fileInfo(result.kernelFile, "vmlinuz")),
            package: kernelPkg.name,
            version: kernelPkg.version,
            release: result.kernelRelease,
          },
          initrd: { ...(await fileInfo(result.initrdFile, "initrd.img")), compression: "none" },
          ...(result.vmlinuxFile ? { vmlinux: await fileInfo(result.vmlinuxFile, "vmlinux") } : {}),
          packages: packages.map((p) => ({
            name: p.name,
            version: p.version,
            sha256: p.sha256,
            size: p.size,
            initrdBytes: result.packageBytes.get(p.name) ?? 0,
          })),
          modules: result.modules,
          conflicts: result.conflicts,
        };
        await writeFile(join(tmp, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
        if (existsSync(dir)) await rm(dir, { recursive: true, force: true }); // damaged, or --no-cache
        try {
          await rename(tmp, dir);
        } catch (err) {
          // Another build of the same key won the race: use its (verified) result.
          const check = await checkAppliance(dir);
          if (!check.manifest) throw err;
          return toAppliance(dir, check.manifest, true);
        }
        await pruneCache(cacheRoot, key).catch((err) =>
          onEvent?.({ type: "warning", message: `could not prune old appliances: ${(err as Error).message}` }),
        );
        return toAppliance(dir, manifest, false);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    },
    {
      ...(signal ? { signal } : {}),
      onWait: (owner) => onEvent?.({ type: "step", message: `waiting for another build of ${key} (${owner})` }),
    },
  );
}

/**
 * Packages index → closure (+ Essential packages) and kernel package. The results are deep-copied: V8 keeps a
 * substring's whole parent string alive, and the parent here is the 50 MB index text.
 */
async function resolveAll(
  archive: Parameters<typeof loadPackages>[0],
  release: Parameters<typeof loadPackages>[1],
  spec: ReturnType<typeof loadApplianceSpec>,
): Promise<{ packages: DebPackage[]; kernelPkg: DebPackage; indexDate: string; packagesSha256: string }> {
  const loaded = await loadPackages(archive, release);
  const roots = [...spec.packages];
  if (spec.essential) {
    for (const p of loaded.index.packages.values())
      if (p.essential && !spec.exclude.includes(p.name)) roots.push(p.name);
  }
  const closure = resolveClosure(loaded.index, [...new Set(roots)].sort(), { exclude: spec.exclude, arch: spec.arch });
  const kernelPkg = resolveKernelPackage(loaded.index, spec.kernel);
  return JSON.parse(
    JSON.stringify({
      packages: closure.packages,
      kernelPkg,
      indexDate: loaded.date,
      packagesSha256: loaded.packagesSha256,
    }),
  );
}

/** Appliances kept besides the newest; each is ~200 MB. */
export const KEEP_APPLIANCES = 3;
const STALE_TEMP_MS = 3600 * 1000;

/**
 * Bound the cache: the KEEP_APPLIANCES newest appliances stay (never `current`), temp directories and partial
 * downloads left by killed builds go once they are an hour old (a live build touches its files far more often).
 */
export async function pruneCache(cacheRoot: string, current: string, now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  const root = applianceRoot(cacheRoot);
  const entries = await readdir(root).catch(() => [] as string[]);
  const appliances: { key: string; mtimeMs: number }[] = [];
  for (const name of entries) {
    const path = join(root, name);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    if (name.startsWith(".tmp-")) {
      if (now - st.mtimeMs > STALE_TEMP_MS) {
        await rm(path, { recursive: true, force: true });
        removed.push(path);
      }
    } else if (!name.startsWith(".") && name !== current) {
      appliances.push({ key: name, mtimeMs: st.mtimeMs });
    }
  }
  appliances.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const a of appliances.slice(KEEP_APPLIANCES - 1)) {
    await rm(join(root, a.key), { recursive: true, force: true });
    removed.push(join(root, a.key));
  }
  const debs = join(cacheRoot, "debs");
  for (const name of await readdir(debs).catch(() => [] as string[])) {
    if (!name.startsWith(".") || !name.endsWith(".tmp")) continue;
    const st = await stat(join(debs, name)).catch(() => undefined);
    if (st && now - st.mtimeMs > STALE_TEMP_MS) {
      await rm(join(debs, name), { force: true });
      removed.push(join(debs, name));
    }
  }
  return removed;
}

function toAppliance(dir: string, manifest: ApplianceManifest, reused: boolean): Appliance {
  return {
    dir,
    kernel: join(dir, manifest.kernel.file),
    initrd: join(dir, manifest.initrd.file),
    ...(manifest.vmlinux ? { vmlinux: join(dir, manifest.vmlinux.file) } : {}),
    key: manifest.key,
    manifest,
    reused,
  };
}

/** Every cached appliance (newest first), with its manifest; damaged ones are listed with `problem`. */
export async function listAppliances(
  env: NodeJS.ProcessEnv,
): Promise<{ dir: string; key: string; manifest?: ApplianceManifest; problem?: string }[]> {
  const root = applianceRoot(cacheDir(env));
  let names: string[];
  try {
    names = (await readdir(root)).filter((n) => !n.startsWith("."));
  } catch {
    return [];
  }
  const out = [];
  for (const key of names) {
    const dir = join(root, key);
    out.push({ dir, key, ...(await checkAppliance(dir)) });
  }
  return out.sort((a, b) => (b.manifest?.createdAt ?? "").localeCompare(a.manifest?.createdAt ?? ""));
}
