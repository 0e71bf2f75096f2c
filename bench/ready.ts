// The `ready` group: the helper VM from nothing to a command answered — vmdib with a cold cache (assemble + boot) and
// a warm one (boot), side by side with libguestfs's appliance (`libguestfs-test-tool`) booting the same kernel.
import { spawn } from "node:child_process";
import { link, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { cacheDir } from "../src/paths.js";
import { type Appliance, type ApplianceEvent, ensureAppliance } from "../src/vm/appliance/index.js";
import { bootKernel, startAppliance } from "../src/vm/machine.js";
import { type AccelVerdict, chooseAccel, findQemu, type QemuInfo } from "../src/vm/probe.js";
import { mustRun, runTimed, type TimedLine, which } from "./proc.js";
import { formatBytes } from "./stats.js";
import { type FactTable, type Group, NotMeasured, type RunResult, type Workload } from "./workload.js";

export const LIBGUESTFS_INSTALL_HINT =
  "install it on the host to measure it: `sudo apt-get install libguestfs-tools` (Debian/Ubuntu). CI does not run " +
  "the bench, so it is deliberately not in .ci/run's package list";

export interface LibguestfsTimeline {
  /** Spawn → "Guest launched OK." (guestfs_launch returned: supermin check, QEMU probe, boot, daemon up). */
  readonly launchMs?: number;
  /** "begin building supermin appliance" → "finished building supermin appliance". */
  readonly superminMs?: number;
  /** From supermin's "build: N packages, including dependencies". */
  readonly packages?: number;
  readonly ok: boolean;
}

/** What `libguestfs-test-tool`'s (verbose) output says about its launch (pure). */
export function parseLibguestfsTimeline(lines: readonly TimedLine[]): LibguestfsTimeline {
  const at = (re: RegExp) => lines.find((l) => re.test(l.text));
  const launched = at(/^Guest launched OK\.?$/) ?? at(/^libguestfs: appliance is up/);
  const begin = at(/^libguestfs: begin building supermin appliance/);
  const end = at(/^libguestfs: finished building supermin appliance/);
  const pkgs = lines.map((l) => /supermin: build: (\d+) packages, including dependencies/.exec(l.text)).find(Boolean);
  return {
    ...(launched ? { launchMs: launched.t } : {}),
    ...(begin && end ? { superminMs: end.t - begin.t } : {}),
    ...(pkgs ? { packages: Number(pkgs[1]) } : {}),
    ok: lines.some((l) => /===== TEST FINISHED OK =====/.test(l.text)),
  };
}

/** The .deb file name of a package in the archive's pool (no epoch in file names). */
export function debFileName(name: string, version: string, arch: string): string {
  return `${name}_${version.replace(/^\d+:/, "")}_${arch}.deb`;
}

/** Facts every workload of the group needs, made once. */
export interface Shared {
  readonly qemu: QemuInfo;
  readonly accel: AccelVerdict;
  /** The user's cached appliance (built first if needed): the warm case, and the kernel libguestfs boots. */
  readonly appliance: Appliance;
}

/** The libguestfs side: the same kernel as ours, its modules extracted for supermin. */
interface Guestfs {
  readonly tool: string;
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** The supermin cache of the warm runs. */
  readonly warmCache: string;
}

export interface ReadyGroupOptions {
  readonly env: NodeJS.ProcessEnv;
  /** Cold runs download the .debs instead of hard-linking them from the user's cache. */
  readonly coldNetwork: boolean;
  readonly log: (line: string) => void;
  /** The host's accelerator verdict and QEMU, shared with the run's header. */
  readonly shared: () => Promise<Shared>;
}

/** QEMU, the accelerator verdict and the user's appliance (built if missing), once per bench run. */
export function sharedVm(env: NodeJS.ProcessEnv, log: (line: string) => void): () => Promise<Shared> {
  let p: Promise<Shared> | undefined;
  return () => {
    p ??= (async () => {
      const qemu = await findQemu(env);
      const appliance = await ensureAppliance({ env, offline: false });
      log(`appliance ${appliance.key}${appliance.reused ? " (cached)" : " (built)"}`);
      const accel = await chooseAccel({ qemu, kernel: bootKernel(appliance), env });
      return { qemu, accel, appliance };
    })();
    return p;
  };
}

/** Boot the appliance (cold, or restored from its snapshot), run `true` over SSH, stop: the timings of one boot. */
async function bootOnce(s: Shared, appliance: Appliance, env: NodeJS.ProcessEnv, snapshot = false) {
  const t0 = performance.now();
  const machine = await startAppliance({ appliance, qemu: s.qemu, accel: s.accel, env, snapshot });
  if (snapshot && machine.start !== "restored") {
    await machine.stop();
    throw new Error(`the appliance was not restored from its snapshot (${machine.start} boot)`);
  }
  try {
    const code = await machine.exec("true");
    const answered = performance.now() - t0;
    if (code !== 0) throw new Error(`\`true\` exited ${code} in the appliance`);
    const t1 = performance.now();
    await machine.stop();
    return {
      ready: machine.readyMs,
      guestInit: machine.guestUptimeAtReady * 1000,
      boot: answered,
      stop: performance.now() - t1,
    };
  } finally {
    await machine.stop();
  }
}

/** The step durations ensureAppliance reports, by what they are. */
function stepTimes(events: readonly ApplianceEvent[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of events) {
    if (e.type !== "step" || e.ms === undefined) continue;
    if (e.message.startsWith("resolved ")) out.resolve = e.ms;
    else if (e.message.startsWith("packages fetched")) out.fetch = e.ms;
    else if (e.message.startsWith("initramfs assembled")) out.assemble = e.ms;
  }
  return out;
}

/**
 * The vmdib appliance's kernel for supermin (libguestfs-test-tool, virt-dib): the kernel file, and its modules
 * extracted from the cached kernel package into `dir` and depmod'ed — the host has no kernel of its own to give.
 */
export async function superminKernel(
  s: Shared,
  env: NodeJS.ProcessEnv,
  dir: string,
  log: (line: string) => void,
): Promise<{ SUPERMIN_KERNEL: string; SUPERMIN_MODULES: string }> {
  // supermin copies module directories into its ext2 root with the attributes of the host's /lib/modules.
  const hostModules = await stat("/lib/modules").catch(() => undefined);
  if (!hostModules?.isDirectory()) {
    throw new NotMeasured(
      "supermin needs a /lib/modules directory on the host (it copies its attributes), and there is none",
      "create an empty one: `sudo mkdir /lib/modules`",
    );
  }
  const sbin = ["/usr/sbin", "/sbin"];
  const dpkgDeb = await which("dpkg-deb", env);
  const depmod = await which("depmod", env, sbin);
  if (!dpkgDeb || !depmod) throw new NotMeasured("dpkg-deb and depmod are needed to give supermin our kernel");
  const m = s.appliance.manifest;
  const deb = join(cacheDir(env), "debs", debFileName(m.kernel.package, m.kernel.version, m.arch));
  if (!(await stat(deb).catch(() => undefined))) {
    throw new NotMeasured(`the appliance's kernel package ${deb} is not in the cache`, "run `vmdib appliance build`");
  }
  log(`extracting ${m.kernel.package} for supermin into ${dir}`);
  await mustRun(dpkgDeb, ["-x", deb, join(dir, "kernel")], env);
  await mustRun(depmod, ["-b", join(dir, "kernel"), m.kernel.release], env);
  return {
    SUPERMIN_KERNEL: s.appliance.kernel,
    SUPERMIN_MODULES: join(dir, "kernel", "lib", "modules", m.kernel.release),
  };
}

const LIBGUESTFS_WARM = { workload: "libguestfs-warm", metric: "launch" } as const;
const LIBGUESTFS_COLD = { workload: "libguestfs-cold", metric: "launch" } as const;

export function readyGroup(o: ReadyGroupOptions): Group {
  const { env } = o;
  let guestfs: Promise<Guestfs> | undefined;
  let seeded: { count: number; bytes: number } | undefined;
  let lgfsPackages: number | undefined;
  let lgfsWarmCache: string | undefined;

  /** libguestfs-test-tool, supermin's needs met, and our kernel with its modules (extracted, depmod'ed) — once. */
  const prepareGuestfs = (): Promise<Guestfs> => {
    guestfs ??= (async () => {
      const tool = await which("libguestfs-test-tool", env);
      if (!tool) throw new NotMeasured("libguestfs-test-tool is not installed", LIBGUESTFS_INSTALL_HINT);
      const dir = await mkdtemp(join(tmpdir(), "vmdib-bench-guestfs-"));
      const kernelEnv = await superminKernel(await o.shared(), env, dir, o.log).catch(async (err: unknown) => {
        await rm(dir, { recursive: true, force: true });
        throw err;
      });
      const warmCache = join(dir, "cache-warm");
      await mkdir(warmCache);
      lgfsWarmCache = warmCache;
      return {
        tool,
        dir,
        warmCache,
        env: {
          ...env,
          // The direct backend (no libvirt daemon), software emulation like ours, and our kernel.
          LIBGUESTFS_BACKEND: "direct",
          LIBGUESTFS_BACKEND_SETTINGS: "force_tcg",
          ...kernelEnv,
        },
      };
    })();
    return guestfs;
  };

  const runGuestfs = async (g: Guestfs, cache: string): Promise<RunResult> => {
    const r = await runTimed(g.tool, [], { env: { ...g.env, LIBGUESTFS_CACHEDIR: cache }, timeoutMs: 15 * 60_000 });
    const tl = parseLibguestfsTimeline(r.lines);
    if (r.code !== 0 || !tl.ok || tl.launchMs === undefined) {
      const tail = r.lines
        .slice(-4)
        .map((l) => l.text)
        .join(" / ");
      throw new Error(`libguestfs-test-tool failed (exit ${r.code}): ${tail}`);
    }
    if (tl.packages !== undefined) lgfsPackages = tl.packages;
    return {
      ms: { launch: tl.launchMs, total: r.ms, ...(tl.superminMs !== undefined ? { supermin: tl.superminMs } : {}) },
    };
  };

  const coldNote = () =>
    o.coldNetwork
      ? "Cold (vmdib): a new, empty cache directory (`XDG_CACHE_HOME`) per run; the signed index and every .deb are " +
        "downloaded from the mirror and verified, the appliance is assembled, then booted."
      : `Cold (vmdib): a new, empty cache directory (\`XDG_CACHE_HOME\`) per run; the signed index (InRelease, ` +
        "Packages) is downloaded from the mirror and verified each time, but the " +
        `.debs are hard-linked into it from the user's cache (a shared .deb cache, only read: ${seeded?.count ?? "?"} ` +
        `files, ${formatBytes(seeded?.bytes ?? 0)}) and verified by SHA256 — so .deb download time is NOT included. ` +
        "The kernel's module metadata is not cached (two passes over the kernel package).";

  const workloads = (): Workload[] => [
    {
      name: "vmdib-cold",
      describe:
        "`ensureAppliance` with an empty cache (index download + verify, dependency closure, .deb verification, " +
        "initramfs assembly), then boot it and run `true` over SSH (see the notes for what is downloaded).",
      async prepare() {
        await o.shared();
      },
      async run() {
        const s = await o.shared();
        const tmp = await mkdtemp(join(tmpdir(), "vmdib-bench-cold-"));
        try {
          const coldEnv: NodeJS.ProcessEnv = { ...env, XDG_CACHE_HOME: tmp };
          delete coldEnv.VMDIB_CACHE_DIR;
          if (!o.coldNetwork) seeded = await seedDebs(join(cacheDir(env), "debs"), join(cacheDir(coldEnv), "debs"));
          const events: ApplianceEvent[] = [];
          const t0 = performance.now();
          const a = await ensureAppliance({ env: coldEnv, offline: false, onEvent: (e) => events.push(e) });
          const build = performance.now() - t0;
          if (a.reused) throw new Error("the cold cache already held an appliance");
          const b = await bootOnce(s, a, env);
          return { ms: { build, ...stepTimes(events), ready: b.ready, boot: b.boot, total: build + b.boot } };
        } finally {
          await rm(tmp, { recursive: true, force: true });
        }
      },
    },
    {
      name: "vmdib-warm",
      describe:
        "the appliance is cached: `ensureAppliance` (cache lookup and check), `startAppliance` (spawn QEMU → the " +
        "guest's ready marker → SSH login) and `true` answered over SSH — what `vmdib run -- true` does before it " +
        "shuts down.",
      async prepare() {
        await o.shared();
      },
      async run() {
        const s = await o.shared();
        const t0 = performance.now();
        const a = await ensureAppliance({ env, offline: false });
        const lookup = performance.now() - t0;
        if (!a.reused) throw new Error("the warm appliance was rebuilt");
        const b = await bootOnce(s, a, env);
        return {
          ms: {
            lookup,
            guestInit: b.guestInit,
            ready: b.ready,
            boot: b.boot,
            total: lookup + b.boot,
            stop: b.stop,
          },
        };
      },
    },
    {
      name: "vmdib-snapshot",
      describe:
        "the appliance and its snapshot are cached: `startAppliance` restores the saved, booted guest (QEMU " +
        "`-incoming`, then the run's keys and shares over the lifeline) instead of booting a kernel, and `true` is " +
        "answered over SSH. prepare makes the snapshot (one cold boot + save, untimed).",
      async prepare() {
        const s = await o.shared();
        const m = await startAppliance({ appliance: s.appliance, qemu: s.qemu, accel: s.accel, env, snapshot: true });
        await m.stop();
      },
      async run() {
        const s = await o.shared();
        const b = await bootOnce(s, s.appliance, env, true);
        return { ms: { guestInit: b.guestInit, ready: b.ready, boot: b.boot, stop: b.stop } };
      },
    },
    {
      name: "libguestfs-cold",
      describe:
        "`libguestfs-test-tool` with an empty `LIBGUESTFS_CACHEDIR` (supermin builds its appliance from the host's " +
        "packages first), `LIBGUESTFS_BACKEND=direct`, `LIBGUESTFS_BACKEND_SETTINGS=force_tcg`, " +
        "`SUPERMIN_KERNEL`/`SUPERMIN_MODULES` = the vmdib appliance's kernel and its modules. launch = spawn → " +
        "`Guest launched OK.`; total = the whole tool (it also partitions, formats and mounts a disk).",
      async prepare() {
        await prepareGuestfs();
      },
      async run() {
        const g = await prepareGuestfs();
        const cache = await mkdtemp(join(g.dir, "cache-cold-"));
        try {
          return await runGuestfs(g, cache);
        } finally {
          await rm(cache, { recursive: true, force: true });
        }
      },
    },
    {
      name: "libguestfs-warm",
      describe:
        "the same with supermin's appliance already built (one untimed run first); supermin still checks it " +
        "(`--if-newer`) on every launch, as in normal use.",
      async prepare() {
        const g = await prepareGuestfs();
        o.log("warming libguestfs's appliance cache (untimed run)");
        await runGuestfs(g, g.warmCache);
      },
      async run() {
        const g = await prepareGuestfs();
        return await runGuestfs(g, g.warmCache);
      },
      async cleanup() {
        const g = await guestfs?.catch(() => undefined);
        if (g) await rm(g.dir, { recursive: true, force: true });
      },
    },
  ];

  return {
    name: "ready",
    title: "Helper VM: from nothing to a command answered (`make bench BENCH=ready`)",
    workloads,
    rows: [
      { label: "libguestfs warm: launch", workload: "libguestfs-warm", metric: "launch" },
      { label: "vmdib warm: lookup + boot + `true`", workload: "vmdib-warm", metric: "total", ref: LIBGUESTFS_WARM },
      { label: "vmdib warm: spawn → ready marker", workload: "vmdib-warm", metric: "ready", ref: LIBGUESTFS_WARM },
      { label: "vmdib warm: guest uptime at ready", workload: "vmdib-warm", metric: "guestInit" },
      { label: "vmdib warm: cache lookup", workload: "vmdib-warm", metric: "lookup" },
      { label: "vmdib warm: shutdown", workload: "vmdib-warm", metric: "stop" },
      { label: "vmdib snapshot: restore + `true`", workload: "vmdib-snapshot", metric: "boot", ref: LIBGUESTFS_WARM },
      { label: "vmdib snapshot: spawn → ready marker", workload: "vmdib-snapshot", metric: "ready" },
      { label: "libguestfs warm: whole test tool", workload: "libguestfs-warm", metric: "total" },
      { label: "libguestfs cold: launch", workload: "libguestfs-cold", metric: "launch" },
      { label: "libguestfs cold: supermin build", workload: "libguestfs-cold", metric: "supermin" },
      { label: "vmdib cold: build + boot + `true`", workload: "vmdib-cold", metric: "total", ref: LIBGUESTFS_COLD },
      { label: "vmdib cold: appliance build", workload: "vmdib-cold", metric: "build" },
      { label: "vmdib cold: index + resolve", workload: "vmdib-cold", metric: "resolve" },
      { label: "vmdib cold: .debs fetch/verify", workload: "vmdib-cold", metric: "fetch" },
      { label: "vmdib cold: initramfs assembly", workload: "vmdib-cold", metric: "assemble" },
      { label: "vmdib cold: boot + `true`", workload: "vmdib-cold", metric: "boot", ref: LIBGUESTFS_WARM },
    ],
    goals: [
      {
        text: "under TCG the helper VM is ready in at most half of libguestfs's time (issue 3; issue 5: cold boot ≤ ½ libguestfs launch)",
        numerator: { workload: "vmdib-warm", metric: "total" },
        denominator: LIBGUESTFS_WARM,
        max: 0.5,
      },
    ],
    async facts() {
      const tables: FactTable[] = [];
      const notes: string[] = [];
      const s = await o.shared().catch(() => undefined);
      if (s) {
        const m = s.appliance.manifest;
        const lg = lgfsWarmCache ? await guestfsApplianceSizes(lgfsWarmCache) : undefined;
        const zst = await compressedSize(s.appliance.initrd, env);
        const rows: string[][] = [
          ["kernel (bzImage)", `${formatBytes(m.kernel.size)} (${m.kernel.release})`, lg ? "the same file" : "–"],
          ["kernel booted", m.vmlinux ? `vmlinux, ${formatBytes(m.vmlinux.size)} (PVH entry)` : "bzImage", "bzImage"],
          [
            "initramfs",
            `${formatBytes(m.initrd.size)}, stored uncompressed (${m.initrd.compression})` +
              (zst ? `; ${formatBytes(zst)} if zstd -3 compressed` : ""),
            lg?.initrd !== undefined ? formatBytes(lg.initrd) : "–",
          ],
          [
            "root file system",
            "none (all in the initramfs)",
            lg?.root ? `ext2 image ${formatBytes(lg.root.size)} (${formatBytes(lg.root.allocated)} allocated)` : "–",
          ],
          ["packages", String(m.packages.length), lgfsPackages !== undefined ? String(lgfsPackages) : "–"],
          ["kernel modules", String(m.modules.length), "all of the kernel's"],
        ];
        tables.push({ title: "Appliance size", header: ["", "vmdib", "libguestfs (supermin)"], rows });
        notes.push(
          `vmdib appliance ${m.key}: Debian ${m.suite}/${m.arch}, index signed ${m.indexDate}; the figures come from ` +
            "its manifest (what `vmdib appliance info` prints).",
        );
      }
      notes.push(coldNote());
      notes.push(
        "Each tool runs with its own defaults: vmdib's appliance gets all host cores (`-smp`, TCG `thread=multi`) and " +
          "2048 MiB; libguestfs 1 vCPU and 1280 MiB. Both boot the same Debian kernel.",
      );
      notes.push(
        "vmdib's ready marker comes from the guest once sshd listens and its preloaded kernel modules are in; " +
          "the rows with `true` add the SSH login and one command. libguestfs's launch ends when its daemon answers.",
      );
      return { tables, notes };
    },
  };
}

/** Hard-link (or copy across file systems) every .deb of `from` into `to`: a cold cache without the downloads. */
async function seedDebs(from: string, to: string): Promise<{ count: number; bytes: number }> {
  await mkdir(to, { recursive: true });
  let count = 0;
  let bytes = 0;
  for (const name of await readdir(from)) {
    if (!name.endsWith(".deb") || name.startsWith(".")) continue;
    await link(join(from, name), join(to, name)).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== "EXDEV" && err.code !== "EPERM") throw err;
      const { copyFile } = await import("node:fs/promises");
      await copyFile(join(from, name), join(to, name));
    });
    count++;
    bytes += (await stat(join(from, name))).size;
  }
  return { count, bytes };
}

/** Sizes of supermin's cached appliance (kernel, initrd, root) in a LIBGUESTFS_CACHEDIR. */
async function guestfsApplianceSizes(
  cache: string,
): Promise<{ initrd?: number; root?: { size: number; allocated: number } } | undefined> {
  const dir = join(cache, `.guestfs-${userInfo().uid}`, "appliance.d");
  const initrd = await stat(join(dir, "initrd")).catch(() => undefined);
  const root = await stat(join(dir, "root")).catch(() => undefined);
  if (!initrd && !root) return undefined;
  return {
    ...(initrd ? { initrd: initrd.size } : {}),
    ...(root ? { root: { size: root.size, allocated: root.blocks * 512 } } : {}),
  };
}

/** What the initramfs would weigh compressed (zstd -3), for the size table; undefined without zstd. */
async function compressedSize(file: string, env: NodeJS.ProcessEnv): Promise<number | undefined> {
  const zstd = await which("zstd", env);
  if (!zstd) return undefined;
  return await new Promise((resolve) => {
    const child = spawn(zstd, ["-3", "-T0", "-q", "-c", file], { stdio: ["ignore", "pipe", "ignore"] });
    let n = 0;
    child.stdout.on("data", (d: Buffer) => {
      n += d.length;
    });
    child.on("error", () => resolve(undefined));
    child.on("close", (code) => resolve(code === 0 ? n : undefined));
  });
}
