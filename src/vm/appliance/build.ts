// Assembling the appliance (effects): .debs → kernel image + newc initramfs in a temp dir, then the manifest.
import { closeSync, openSync, readSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { VmdibError } from "../../errors.js";
import type { FetchedDeb, OnEvent } from "./archive.js";
import { sha256File, writeAtomic } from "./archive.js";
import { CpioWriter, S_IFREG } from "./cpio.js";
import { debTarEntries, debTarMember, decompressMember, readArMembers } from "./deb.js";
import { extractVmlinux } from "./kernel.js";
import { releaseGarbage } from "./memory.js";
import { buildModuleFiles, type ModuleInfo, moduleInfo, parseBuiltin, selectModules } from "./modules.js";
import { isDropped, mergeUsr, normalizePath, RootfsWriter } from "./rootfs.js";
import { readTar, type TarEntry } from "./tar.js";

export interface AssembleInput {
  /** Packages whose data go into the initramfs. */
  debs: FetchedDeb[];
  /** The kernel image package (linux-image-<release>-<flavour>). */
  kernelDeb: FetchedDeb;
  modules: string[];
  /** Modules the init loads at boot (appliance.yaml `preload`), written to /etc/vmdib/modules. */
  preload: string[];
  /** Extra path prefixes to leave out (appliance.yaml `drop`). */
  drop: string[];
  /** Contents of guest/init, installed as /init. */
  init: Buffer;
  /** mtime of synthesized entries (seconds). */
  mtime: number;
  /** Directory to write kernel and initrd into. */
  outDir: string;
  /** Where per-kernel module metadata is cached (saves one pass over the kernel package next time). */
  kernelCacheDir?: string;
  onEvent?: OnEvent;
  signal?: AbortSignal;
}

export interface AssembleResult {
  kernelRelease: string;
  kernelFile: string;
  /** The uncompressed ELF kernel, when the bzImage's payload could be unpacked. */
  vmlinuxFile: string | undefined;
  initrdFile: string;
  modules: string[];
  conflicts: string[];
  initrdBytes: number;
  /** Bytes each package added to the (uncompressed) initramfs. */
  packageBytes: Map<string, number>;
}

async function collect<E extends TarEntry>(gen: AsyncGenerator<E>): Promise<E[]> {
  const out: E[] = [];
  for await (const e of gen) out.push(e);
  return out;
}

/** How many packages are decoded ahead of the one being written. */
const UNPACK_AHEAD = 3;

/** Build kernel + initramfs from verified .debs into `outDir`. */
export async function assembleAppliance(input: AssembleInput): Promise<AssembleResult> {
  const { onEvent, signal } = input;
  const initrdFile = join(input.outDir, "initrd.img");
  const kernelFile = join(input.outDir, "vmlinuz");
  const fd = openSync(initrdFile, "w", 0o644);
  try {
    const cpio = new CpioWriter(fd);
    const root = new RootfsWriter(cpio, input.mtime, input.drop);
    root.addSkeleton();
    let t0 = Date.now();
    // Decode up to UNPACK_AHEAD packages ahead (xz/zstd children run on other cores) while writing in order.
    const load = async (d: FetchedDeb) => {
      signal?.throwIfAborted();
      const members = await readArMembers(d.path);
      let postinst: string | undefined;
      for await (const e of readTar(decompressMember(debTarMember(members, "control")))) {
        if (e.type === "file" && e.path.replace(/^\.?\//, "") === "postinst") postinst = e.data.toString("utf8");
      }
      const data = debTarMember(members, "data");
      // Bodies the initramfs leaves out (docs, man pages, locales, appliance.yaml `drop`) are skipped, not read; a
      // hard link to one still needs its target's contents: then the package is read again, whole.
      const wantData = (path: string) => !isDropped(mergeUsr(normalizePath(path)), input.drop);
      let entries = await collect(readTar(decompressMember(data), { wantData }));
      const skipped = new Set(entries.filter((e) => e.skipped).map((e) => normalizePath(e.path)));
      if (entries.some((e) => e.type === "hardlink" && skipped.has(normalizePath(e.linkname)))) {
        entries = await collect(readTar(decompressMember(data)));
      }
      return { entries, postinst };
    };
    const packageBytes = new Map<string, number>();
    // A queue, not an array indexed by package: a written package's contents must become garbage at once.
    const pending: Promise<Awaited<ReturnType<typeof load>>>[] = [];
    let started = 0;
    for (let i = 0; i < input.debs.length; i++) {
      while (started < Math.min(i + UNPACK_AHEAD, input.debs.length)) {
        const p = load(input.debs[started++] as FetchedDeb);
        p.catch(() => {}); // handled when awaited below; avoids an "unhandled rejection" while an earlier one is awaited
        pending.push(p);
      }
      const { entries, postinst } = await (pending.shift() as Promise<Awaited<ReturnType<typeof load>>>);
      const before = cpio.size;
      try {
        root.addPackage(entries, postinst);
        packageBytes.set(input.debs[i]?.pkg.name ?? "", cpio.size - before);
      } catch (err) {
        throw new VmdibError(`cannot add ${input.debs[i]?.pkg.name} to the initramfs`, { cause: err });
      }
    }
    onEvent?.({
      type: "step",
      message: `unpacked ${input.debs.length} packages into the initramfs`,
      ms: Date.now() - t0,
    });

    t0 = Date.now();
    releaseGarbage(); // the last packages' contents, before the kernel package streams through
    const kernel = await addKernel(root, input, kernelFile);
    onEvent?.({
      type: "step",
      message: `kernel ${kernel.release}: ${kernel.modules.length} modules (${input.modules.length} requested)`,
      ms: Date.now() - t0,
    });

    // Only the preload list: modprobe resolves its dependencies, and everything else the kernel loads on demand
    // through modules.alias.bin (a mount of ext4 asks for "fs-ext4") — loading all of them took seconds per boot.
    root.addFile("etc/vmdib/modules", input.preload.map((m) => `${m}\n`).join(""));
    if (root.has("init")) throw new VmdibError("a package ships /init, which would shadow the appliance's init");
    root.add({ name: "init", mode: S_IFREG | 0o755, data: input.init });
    root.synthesize({ hostname: "vmdib" });
    cpio.finish();
    const vmlinuxPath = join(input.outDir, "vmlinux");
    const vmlinuxFile = (await extractVmlinux(kernelFile, vmlinuxPath)) ? vmlinuxPath : undefined;
    if (!vmlinuxFile)
      onEvent?.({ type: "warning", message: "could not extract vmlinux from the bzImage; only vmlinuz is available" });
    return {
      kernelRelease: kernel.release,
      kernelFile,
      vmlinuxFile,
      packageBytes,
      initrdFile,
      modules: kernel.modules,
      conflicts: root.conflicts,
      initrdBytes: cpio.size,
    };
  } finally {
    closeSync(fd);
  }
}

/**
 * Two passes over the kernel package: first read every module's modinfo (to resolve hard and soft deps of the
 * requested ones), then copy only the selected modules. Two decompressions cost a few seconds once per appliance;
 * holding all ~400 MB of modules in memory instead would not be worth it.
 */
/** What one pass over a kernel package learns, cached per package hash. */
interface KernelMeta {
  release: string;
  infos: ModuleInfo[];
  /** modules.builtin etc., base64. */
  extras: Record<string, string>;
}

/** A module body larger than this is written to a file for the first pass rather than held in memory. */
const BIG_MODULE_BYTES = 4 << 20;

/** ModuleInfo of a .ko file on disk, reading only its ELF header, section table and the sections named there. */
function moduleInfoFromFile(rel: string, file: string): ModuleInfo {
  const fd = openSync(file, "r");
  try {
    return moduleInfo(rel, (offset, length) => {
      const buf = Buffer.alloc(length);
      const n = readSync(fd, buf, 0, length, offset);
      return buf.subarray(0, n);
    });
  } finally {
    closeSync(fd);
  }
}

const MOD_PREFIX = /^(?:\.\/)?(?:usr\/)?lib\/modules\/([^/]+)\/(.*)$/;
const BOOT = /^(?:\.\/)?boot\/vmlinuz-(.+)$/;
/** The files of lib/modules/<release>/ the first pass over the kernel package reads. */
const MOD_META =
  /^(?:\.\/)?(?:usr\/)?lib\/modules\/[^/]+\/(?:.*\.ko(?:\.(?:xz|zst|gz))?|modules\.(?:builtin|builtin\.modinfo|order))$/;

async function addKernel(
  root: RootfsWriter,
  input: AssembleInput,
  kernelFile: string,
): Promise<{ release: string; modules: string[] }> {
  // Module metadata of this exact kernel package, cached: later builds (a changed init or module list) then need
  // one pass over the kernel package instead of two.
  const cacheFile = input.kernelCacheDir ? join(input.kernelCacheDir, `${input.kernelDeb.pkg.sha256}.json`) : undefined;
  let meta: KernelMeta | undefined;
  if (cacheFile) {
    try {
      meta = JSON.parse(await readFile(cacheFile, "utf8")) as KernelMeta;
    } catch {}
  }
  // The bzImage (~8 MB) is written as soon as it streams past, not held through both passes.
  let kernelWritten = false;
  if (!meta) {
    const infos: ModuleInfo[] = [];
    let release: string | undefined;
    const extras: Record<string, string> = {};
    input.signal?.throwIfAborted();
    // Only what this pass reads (every module's modinfo): the package's other files are skipped, not buffered.
    const wantData = (path: string) => BOOT.test(path) || MOD_META.test(path);
    // Each body is used before the next is read (written, or parsed into strings): one buffer for all of them. A
    // large module (amdgpu.ko is ~19 MB, i915 and nouveau 5-7) goes to a file instead, and only its ELF section table
    // and .modinfo are read back: held in memory it was the controller's peak.
    const bigModule = join(input.outDir, ".module.ko");
    const bodyTo = (path: string, size: number) =>
      size > BIG_MODULE_BYTES && MOD_META.test(path) && path.endsWith(".ko") ? bigModule : undefined;
    const entries = await debTarEntries(input.kernelDeb.path, "data", { wantData, reuseBuffer: true, bodyTo });
    try {
      for await (const e of entries) {
        const boot = BOOT.exec(e.path);
        if (boot && e.type === "file") {
          await writeFile(kernelFile, e.data);
          kernelWritten = true;
          release = boot[1];
          continue;
        }
        const m = MOD_PREFIX.exec(e.path);
        if (!m || e.type !== "file") continue;
        const rel = m[2] as string;
        if (/\.ko(\.(xz|zst|gz))?$/.test(rel)) {
          if (!rel.endsWith(".ko")) throw new VmdibError(`compressed kernel modules (${rel}) are not supported yet`);
          infos.push(e.file ? moduleInfoFromFile(rel, e.file) : moduleInfo(rel, e.data));
        } else if (/^modules\.(builtin|builtin\.modinfo|order)$/.test(rel)) {
          extras[rel] = e.data.toString("base64");
        }
      }
    } finally {
      await rm(bigModule, { force: true }); // outDir becomes the appliance's directory
    }
    if (!kernelWritten || !release) throw new VmdibError(`${input.kernelDeb.pkg.name} contains no /boot/vmlinuz-*`);
    meta = { release, infos, extras };
    if (cacheFile) await writeAtomic(cacheFile, JSON.stringify(meta));
  }
  const { release, infos } = meta;
  const extras = new Map(Object.entries(meta.extras).map(([k, v]) => [k, Buffer.from(v, "base64")]));

  const builtin = parseBuiltin(extras.get("modules.builtin")?.toString() ?? "");
  const sel = selectModules(infos, input.modules, builtin);
  const wanted = new Set(sel.order.map((m) => m.path));
  const base = `usr/lib/modules/${release}`;
  input.signal?.throwIfAborted();
  releaseGarbage(); // the first pass's buffers and module infos
  // Only the selected modules' contents (and the kernel's, unless the first pass has it) are read into memory.
  const selected = (path: string) => {
    const m = MOD_PREFIX.exec(path);
    return m ? wanted.has(m[2] as string) : !kernelWritten && BOOT.exec(path)?.[1] === release;
  };
  // root.addFile writes a module's bytes to the initramfs at once (cpio.ts writes synchronously): one buffer too.
  for await (const e of await debTarEntries(input.kernelDeb.path, "data", { wantData: selected, reuseBuffer: true })) {
    if (!kernelWritten && e.type === "file" && e.path.replace(/^\.\//, "") === `boot/vmlinuz-${release}`) {
      await writeFile(kernelFile, e.data);
      kernelWritten = true;
    }
    const m = MOD_PREFIX.exec(e.path);
    if (m && e.type === "file" && wanted.has(m[2] as string)) root.addFile(`${base}/${m[2]}`, e.data);
  }
  if (!kernelWritten) throw new VmdibError(`${input.kernelDeb.pkg.name} contains no /boot/vmlinuz-${release}`);
  for (const [name, data] of extras) root.addFile(`${base}/${name}`, data);
  const files = buildModuleFiles(sel.order, extras.get("modules.builtin")?.toString() ?? "");
  root.addFile(`${base}/modules.dep`, files.dep);
  root.addFile(`${base}/modules.dep.bin`, files.depBin);
  root.addFile(`${base}/modules.softdep`, files.softdep);
  root.addFile(`${base}/modules.alias`, files.alias);
  root.addFile(`${base}/modules.alias.bin`, files.aliasBin);
  root.addFile(`${base}/modules.builtin.bin`, files.builtinBin);
  return { release, modules: sel.order.map((m) => m.name) };
}

export { sha256File };
