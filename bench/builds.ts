// The image-build groups of `make bench`: W1 (`vmdib build -t qcow2 vm debian-minimal`: cold, warm, one install.d
// script edited) and W2 (`debian-minimal -t tar`: vmdib cold next to native disk-image-create as root, and the peers
// virt-dib and debos on the same work), with the vmdib controller's peak RSS and the sizes of what was built.
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveMirror } from "../src/mirror.js";
import { BUILTIN_ELEMENTS_DIR, PACKAGE_ROOT } from "../src/paths.js";
import { mustRun, type Ran, runTimed, tail, which } from "./proc.js";
import { type Shared, superminKernel } from "./ready.js";
import { formatBytes, formatSeconds } from "./stats.js";
import { type FactTable, type Group, type GroupFacts, NotMeasured, type RunResult, type Workload } from "./workload.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
/** Where Debian's python3-diskimage-builder keeps DIB's library and elements (virt-dib needs both paths). */
const DIB_PYTHON_DIR = "/usr/lib/python3/dist-packages/diskimage_builder";

/** Issue 5's limit on the vmdib controller's peak resident memory. */
export const RSS_LIMIT_BYTES = 150e6;

/** The install.d script W1's "edited" build changes (in a copy of its element: the tree key changes for it only). */
export const EDITED_SCRIPT = { element: "base", script: join("install.d", "00-baseline-environment") } as const;

/** Generous ceilings: a run that takes longer is stopped and reported as failed (the machine may be very busy). */
const VMDIB_BUILD_TIMEOUT_MS = 90 * 60_000;
const NATIVE_DIB_TIMEOUT_MS = 45 * 60_000;
const PEER_TIMEOUT_MS = 45 * 60_000;

// ---------------------------------------------------------------- pure parts

/** What one `vmdib build --json` run's lines say. */
export interface BuildEvents {
  /** The appliance was assembled in this build (cold cache), and how long that took: from the tree cache verdict
   * (the last event before the helper VM is asked for) to `appliance KEY (built)`. */
  readonly applianceBuilt: boolean;
  readonly applianceMs?: number;
  /** The tree cache's verdict ("hit" / "miss"), from the summary. */
  readonly treeCache?: "hit" | "miss";
  readonly steps: readonly { readonly name: string; readonly seconds: number }[];
  readonly outputs: readonly { readonly path: string; readonly format: string; readonly bytes: number }[];
  readonly totalSeconds?: number;
  /** The last error event's message, if any. */
  readonly error?: string;
}

interface JsonEvent {
  readonly time?: string;
  readonly type?: string;
  readonly message?: string;
  readonly steps?: { name: string; seconds: number }[];
  readonly outputs?: { path: string; format: string; bytes: number }[];
  readonly caches?: { name: string; result: string }[];
  readonly totalSeconds?: number;
}

/** The last element matching `pred` (Array.prototype.findLast is newer than the ES2022 library we compile with). */
function findLast<T>(xs: readonly T[], pred: (x: T) => boolean): T | undefined {
  for (let i = xs.length - 1; i >= 0; i--) if (pred(xs[i] as T)) return xs[i];
  return undefined;
}

/** Parse `vmdib build --json` output (pure); lines that are not JSON events (stderr) are skipped. */
export function parseBuildEvents(lines: readonly string[]): BuildEvents {
  const events: JsonEvent[] = [];
  for (const line of lines) {
    if (!line.startsWith("{")) continue;
    try {
      events.push(JSON.parse(line) as JsonEvent);
    } catch {
      // not an event
    }
  }
  const at = (e: JsonEvent | undefined) => (e?.time ? Date.parse(e.time) : Number.NaN);
  const builtIdx = events.findIndex(
    (e) => e.type === "info" && /^appliance [0-9a-f]+ \(built\)$/.test(e.message ?? ""),
  );
  let applianceMs: number | undefined;
  if (builtIdx >= 0) {
    const before = events.slice(0, builtIdx);
    const verdict = findLast(before, (e) => e.type === "info" && /^tree cache (hit|miss) /.test(e.message ?? ""));
    const ms = at(events[builtIdx]) - at(verdict);
    if (Number.isFinite(ms)) applianceMs = ms;
  }
  const summary = findLast(events, (e) => e.type === "summary");
  const tree = summary?.caches?.find((c) => c.name.startsWith("tree"))?.result.split(" ")[0];
  const error = findLast(events, (e) => e.type === "error")?.message;
  return {
    applianceBuilt: builtIdx >= 0,
    ...(applianceMs !== undefined ? { applianceMs } : {}),
    ...(tree === "hit" || tree === "miss" ? { treeCache: tree } : {}),
    steps: (summary?.steps ?? []).map((s) => ({ name: s.name, seconds: s.seconds })),
    outputs: (summary?.outputs ?? []).map((o) => ({ path: o.path, format: o.format, bytes: o.bytes })),
    ...(summary?.totalSeconds !== undefined ? { totalSeconds: summary.totalSeconds } : {}),
    ...(error ? { error } : {}),
  };
}

/** Debian's security archive next to a mirror, as vmdib's debian-minimal element derives it (pure). */
export function securityMirror(mirror: string): string {
  const m = mirror.replace(/\/+$/, "");
  return m.endsWith("/debian") ? `${m.slice(0, -"/debian".length)}/debian-security` : `${m}-security`;
}

/**
 * The DIB_* settings for DIB's own debian-minimal (native disk-image-create, virt-dib), so that it builds what
 * vmdib builds: the same mirror and release, and the security suite of releases since bullseye (DIB 3.13 writes
 * the older `<release>/updates` unless told).
 */
export function dibEnv(mirror: string, release: string): Record<string, string> {
  return {
    DIB_RELEASE: release,
    DIB_DISTRIBUTION_MIRROR: mirror,
    DIB_DEBIAN_SECURITY_MIRROR: securityMirror(mirror),
    DIB_DEBIAN_SECURITY_SUBPATH: "-security",
  };
}

/** `disk-image-create` argv for W2, prefixed by what makes it root (`sudo -n env K=V …`, or nothing as root). */
export function nativeDibArgv(
  asRoot: readonly string[],
  env: Readonly<Record<string, string>>,
  out: string,
): { cmd: string; args: string[] } {
  const dib = ["disk-image-create", "-t", "tar", "-o", out, "debian-minimal"];
  // sudo resets the environment: the settings go through env(1).
  const argv = asRoot.length ? [...asRoot, "env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...dib] : dib;
  return { cmd: argv[0] as string, args: argv.slice(1) };
}

/** A harmless last line for the edited install.d script: a new key for its element, nothing else changes (pure). */
export function editedScript(text: string, round: number, stamp: string): string {
  return `${text.endsWith("\n") ? text : `${text}\n`}true # edited by vmdib's bench, round ${round}, ${stamp}\n`;
}

/** A debos recipe doing W2's work: debootstrap minbase of the release from the mirror, packed as a tarball (pure). */
export function debosRecipe(mirror: string, release: string): string {
  return [
    "architecture: amd64",
    "actions:",
    "  - action: debootstrap",
    `    suite: ${release}`,
    "    components: [main]",
    `    mirror: ${mirror}`,
    "    variant: minbase",
    "  - action: pack",
    "    file: debian-minimal.tar.gz",
    "",
  ].join("\n");
}

const SAYS_WHY = /error|failed|not found|cannot|can only|denied|not supported/i;

/**
 * What a failed tool's output says about why (pure): the first and the last line naming an error (one when they are
 * the same), else the last line; backticks become quotes so the text fits in Markdown code.
 */
export function failureLine(lines: readonly string[]): string {
  const meaningful = lines.map((l) => l.trim().replace(/`/g, "'")).filter(Boolean);
  const errs = meaningful.filter((l) => SAYS_WHY.test(l) && !/^If reporting/.test(l));
  const first = errs[0];
  const last = errs[errs.length - 1];
  if (first && last) return first === last ? first : `${first} … ${last}`;
  return meaningful[meaningful.length - 1] ?? "(no output)";
}

// ---------------------------------------------------------------- effects

/** The packages debos needs that this host lacks, unpacked instead of installed: debos's Recommends include
 * systemd-resolved, which replaces /etc/resolv.conf with a stub nothing serves here (DESIGN.md). */
const DEBOS_DEBS = ["debos", "fakemachine", "libostree-1-1", "libavahi-glib1", "busybox-static"] as const;

export interface BuildGroupOptions {
  readonly env: NodeJS.ProcessEnv;
  readonly log: (line: string) => void;
  /** The user's appliance and QEMU (shared with the ready group): its kernel serves virt-dib's supermin. */
  readonly shared: () => Promise<Shared>;
}

/** One vmdib build's record: what the events said, the run, and its peak RSS. */
interface VmdibRun {
  readonly events: BuildEvents;
  readonly ran: Ran;
}

/** Mirror and release for every row; the mirror as src/mirror.ts resolves it (DIB_DISTRIBUTION_MIRROR or apt). */
function target(env: NodeJS.ProcessEnv): { mirror: string; release: string } {
  return { mirror: resolveMirror(env), release: env.DIB_RELEASE || "bookworm" };
}

/** `vmdib build --json …` as the current user with its own cache directory; throws unless it built. */
async function vmdibBuild(
  args: readonly string[],
  o: { env: NodeJS.ProcessEnv; cache: string; cwd: string; elementsPath?: string; signal?: AbortSignal | undefined },
): Promise<VmdibRun> {
  const { mirror, release } = target(o.env);
  const env: NodeJS.ProcessEnv = {
    ...o.env,
    VMDIB_CACHE_DIR: o.cache,
    DIB_DISTRIBUTION_MIRROR: mirror,
    DIB_RELEASE: release,
  };
  delete env.ELEMENTS_PATH;
  delete env.XDG_CACHE_HOME;
  if (o.elementsPath) env.ELEMENTS_PATH = o.elementsPath;
  const ran = await runTimed(VMDIB, ["build", "--json", ...args], {
    env,
    cwd: o.cwd,
    timeoutMs: VMDIB_BUILD_TIMEOUT_MS,
    rss: true,
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const events = parseBuildEvents(ran.lines.map((l) => l.text));
  if (ran.code !== 0) {
    const why = ran.timedOut ? `timed out after ${formatSeconds(ran.ms)}` : `exit ${ran.code}`;
    // vmdib's own error goes to stderr as plain lines; the JSON events are too long to quote.
    const plain = ran.lines.map((l) => l.text).filter((l) => !l.startsWith("{"));
    throw new Error(
      `vmdib build ${args.join(" ")}: ${why}: ${events.error ?? (plain.slice(-3).join(" / ") || "(no message)")}`,
    );
  }
  return { events, ran };
}

/** How this user becomes root for native DIB: nothing as root, `sudo -n` when it works, else NotMeasured. */
async function rootPrefix(env: NodeJS.ProcessEnv): Promise<string[]> {
  if (process.getuid?.() === 0) return [];
  const sudo = await which("sudo", env);
  if (!sudo) {
    throw new NotMeasured(
      "native disk-image-create needs root; the bench runs as a normal user and sudo is missing",
      "run `make bench` as root for this row, or install sudo",
    );
  }
  const r = await runTimed(sudo, ["-n", "true"], { env, timeoutMs: 30_000 });
  if (r.code !== 0) {
    throw new NotMeasured(
      `native disk-image-create needs root; \`sudo -n\` was refused (${failureLine(r.lines.map((l) => l.text))})`,
      "run `sudo -v` right before `make bench` (sudo -n uses the cached credentials), or run the bench as root",
    );
  }
  return [sudo, "-n"];
}

/** Remove a directory that root may have written into (native DIB's outputs and cache). */
async function rmAsRoot(dir: string, prefix: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  if (prefix.length)
    await runTimed(prefix[0] as string, [...prefix.slice(1), "rm", "-rf", dir], { env, timeoutMs: 120_000 });
  await rm(dir, { recursive: true, force: true });
}

/** Native `disk-image-create -t tar debian-minimal` (DIB's own elements) with an empty DIB_IMAGE_CACHE. */
function nativeDibWorkload(name: string, o: BuildGroupOptions, sizes: Map<string, number>): Workload {
  let prefix: string[] | undefined;
  let dir: string | undefined;
  return {
    name,
    describe:
      "Debian's `disk-image-create -t tar -o OUT debian-minimal` (python3-diskimage-builder 3.13, DIB's own " +
      "elements) as root — directly when the bench runs as root, else through `sudo -n` — with an empty " +
      "`DIB_IMAGE_CACHE` and the same mirror and release as vmdib (`DIB_RELEASE`, `DIB_DISTRIBUTION_MIRROR`, the " +
      "`-security` suite next to it): the floor without any VM.",
    async prepare() {
      if (!(await which("disk-image-create", o.env))) {
        throw new NotMeasured("disk-image-create is not installed", "`sudo apt-get install python3-diskimage-builder`");
      }
      target(o.env);
      prefix = await rootPrefix(o.env);
    },
    async run(round, signal) {
      const { mirror, release } = target(o.env);
      dir = await mkdtemp(join(tmpdir(), `vmdib-bench-dib-${round}-`));
      const env = { ...dibEnv(mirror, release), DIB_IMAGE_CACHE: join(dir, "cache") };
      const out = join(dir, "debian-minimal");
      const { cmd, args } = nativeDibArgv(prefix ?? [], env, out);
      try {
        const r = await runTimed(cmd, args, {
          env: prefix?.length ? o.env : { ...o.env, ...env },
          cwd: dir,
          timeoutMs: NATIVE_DIB_TIMEOUT_MS,
          ...(signal ? { signal } : {}),
        });
        if (r.code !== 0) throw new Error(`disk-image-create failed (exit ${r.code}): ${tail(r, 3)}`);
        const tar = await stat(`${out}.tar`).catch(() => undefined);
        if (tar) sizes.set(name, tar.size);
        return { ms: { total: r.ms } };
      } finally {
        await rmAsRoot(dir, prefix ?? [], o.env);
      }
    },
  };
}

/** Sizes of one W1 qcow2 and of DIB's conversion of the same raw disk (its default: `qemu-img convert -c`). */
async function dibConversion(
  qcow2: string,
  env: NodeJS.ProcessEnv,
): Promise<{ ours: number; dib: number } | undefined> {
  const qemuImg = await which("qemu-img", env);
  if (!qemuImg) return undefined;
  const dir = await mkdtemp(join(tmpdir(), "vmdib-bench-qcow2-"));
  try {
    const raw = join(dir, "disk.raw");
    const dib = join(dir, "dib.qcow2");
    await mustRun(qemuImg, ["convert", "-f", "qcow2", "-O", "raw", qcow2, raw], env);
    // DIB's lib/img-functions: qemu-img convert ${COMPRESS_IMAGE:+-c} -f raw -O $IMAGE_TYPE $EXTRA_OPTIONS, with
    // COMPRESS_IMAGE on and QEMU_IMG_OPTIONS empty by default.
    await mustRun(qemuImg, ["convert", "-c", "-f", "raw", "-O", "qcow2", raw, dib], env);
    return { ours: (await stat(qcow2)).size, dib: (await stat(dib)).size };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Peak-RSS table rows and the verdict over the vmdib workloads that ran. */
function rssFacts(rss: ReadonlyMap<string, number[]>): { table?: FactTable; verdict?: string } {
  const rows = [...rss.entries()].filter(([, v]) => v.length);
  if (!rows.length) return {};
  const peak = (v: number[]) => Math.max(...v) * 1024;
  const worst = Math.max(...rows.map(([, v]) => peak(v)));
  return {
    table: {
      title: "Peak RSS of the vmdib controller process",
      header: ["workload", "peak RSS (VmHWM)", "runs"],
      rows: rows.map(([w, v]) => [w, formatBytes(peak(v)), String(v.length)]),
    },
    verdict:
      `the vmdib controller's peak RSS ≤ ${formatBytes(RSS_LIMIT_BYTES)} (issue 5) — the highest, ` +
      `${formatBytes(worst)}: **${worst <= RSS_LIMIT_BYTES ? "met" : "not met"}**. VmHWM of the node process ` +
      "(`bin/vmdib`) read from /proc every 0.2 s; QEMU and other children are not counted.",
  };
}

/** The steps of the last run of each vmdib workload (from the build's summary event), side by side. */
function stepsTable(runs: ReadonlyMap<string, VmdibRun>): FactTable | undefined {
  if (!runs.size) return undefined;
  const names: string[] = [];
  for (const r of runs.values()) for (const s of r.events.steps) if (!names.includes(s.name)) names.push(s.name);
  const cell = (r: VmdibRun, n: string) => {
    const s = r.events.steps.find((x) => x.name === n);
    return s ? s.seconds.toFixed(1) : "–";
  };
  const workloads = [...runs.keys()];
  const rows = names.map((n) => [n, ...workloads.map((w) => cell(runs.get(w) as VmdibRun, n))]);
  rows.push([
    "total (the build's own clock)",
    ...workloads.map((w) => runs.get(w)?.events.totalSeconds?.toFixed(1) ?? "–"),
  ]);
  return {
    title: "Where the time went (seconds per step, last run of each; from the build's summary)",
    header: ["step", ...workloads],
    rows,
  };
}

// ---------------------------------------------------------------- W1

export function w1Group(o: BuildGroupOptions): Group {
  const { env } = o;
  /** The cache of the latest cold build: warm and edited builds of the same round reuse it. */
  let work: { dir: string; cache: string } | undefined;
  const runs = new Map<string, VmdibRun>();
  const rss = new Map<string, number[]>();
  const dibSizes = new Map<string, number>();
  const outputs = new Map<string, string>();

  const record = (name: string, r: VmdibRun) => {
    runs.set(name, r);
    if (r.ran.peakRssKb !== undefined) rss.set(name, [...(rss.get(name) ?? []), r.ran.peakRssKb]);
    const q = r.events.outputs.find((x) => x.format === "qcow2");
    if (q) outputs.set(name, q.path);
  };
  const qcow2Args = (out: string) => ["-o", out, "-t", "qcow2", "vm", "debian-minimal"];
  const needWork = () => {
    if (!work) throw new Error("needs the cache of a w1-cold build in the same run (BENCH=w1)");
    return work;
  };
  const dropWork = async () => {
    if (work) await rm(work.dir, { recursive: true, force: true });
    work = undefined;
  };

  const workloads = (): Workload[] => [
    nativeDibWorkload("w1-dib-native", o, dibSizes),
    {
      name: "w1-cold",
      describe:
        "`vmdib build --json -o OUT -t qcow2 vm debian-minimal` (`bin/vmdib`, the current user) with a new, empty " +
        "`VMDIB_CACHE_DIR`: index and .deb downloads, the appliance assembled and cold-booted (its snapshot saved), " +
        "debootstrap's first stage on the host, every phase, the tree saved, block device, grub, qcow2 on the host. " +
        "The appliance row: from the tree cache verdict to `appliance KEY (built)` in the build's --json events.",
      async prepare() {
        target(env);
      },
      async run(round, signal): Promise<RunResult> {
        await dropWork();
        const dir = await mkdtemp(join(tmpdir(), `vmdib-bench-w1-${round}-`));
        work = { dir, cache: join(dir, "cache") };
        const r = await vmdibBuild(qcow2Args(join(dir, "out", "cold")), { env, cache: work.cache, cwd: dir, signal });
        if (!r.events.applianceBuilt) throw new Error("the cold cache already held an appliance");
        record("w1-cold", r);
        return {
          ms: { total: r.ran.ms, ...(r.events.applianceMs !== undefined ? { appliance: r.events.applianceMs } : {}) },
        };
      },
      cleanup: dropWork,
    },
    {
      name: "w1-warm",
      describe:
        "the same command again with the cold build's cache: appliance (snapshot restore), debootstrap stage one and " +
        "the tree after post-root.d all cached — the tree cache must hit (the run fails otherwise).",
      async run(_round, signal): Promise<RunResult> {
        const w = needWork();
        const r = await vmdibBuild(qcow2Args(join(w.dir, "out", "warm")), { env, cache: w.cache, cwd: w.dir, signal });
        if (r.events.treeCache !== "hit") throw new Error(`the warm build's tree cache: ${r.events.treeCache ?? "?"}`);
        record("w1-warm", r);
        return { ms: { total: r.ran.ms } };
      },
    },
    {
      name: "w1-edited",
      describe:
        `the same cache, with a copy of the \`${EDITED_SCRIPT.element}\` element given through ELEMENTS_PATH whose ` +
        `\`${EDITED_SCRIPT.script}\` has one harmless line appended (\`true # …\`): the tree key changes, the ` +
        "tree after post-root.d is built again (the debootstrap stage one and the appliance stay cached).",
      async prepare() {
        await stat(join(BUILTIN_ELEMENTS_DIR, EDITED_SCRIPT.element, EDITED_SCRIPT.script)).catch(() => {
          throw new NotMeasured(`vmdib's elements have no ${EDITED_SCRIPT.element}/${EDITED_SCRIPT.script} to edit`);
        });
      },
      async run(round, signal): Promise<RunResult> {
        const w = needWork();
        const elements = join(w.dir, `elements-${round}`);
        const copy = join(elements, EDITED_SCRIPT.element);
        await cp(join(BUILTIN_ELEMENTS_DIR, EDITED_SCRIPT.element), copy, { recursive: true });
        const script = join(copy, EDITED_SCRIPT.script);
        const mode = (await stat(script)).mode;
        await writeFile(script, editedScript(await readFile(script, "utf8"), round, new Date().toISOString()));
        await chmod(script, mode);
        const r = await vmdibBuild(qcow2Args(join(w.dir, "out", "edited")), {
          env,
          cache: w.cache,
          cwd: w.dir,
          elementsPath: elements,
          signal,
        });
        if (r.events.treeCache !== "miss")
          throw new Error(`the edited build's tree cache: ${r.events.treeCache ?? "?"}`);
        if (r.events.applianceBuilt) throw new Error("the edited build assembled the appliance again");
        record("w1-edited", r);
        return { ms: { total: r.ran.ms } };
      },
    },
  ];

  const NATIVE = { workload: "w1-dib-native", metric: "total" } as const;
  return {
    name: "w1",
    title: "W1: `vm debian-minimal` to qcow2 (`make bench BENCH=w1`)",
    defaultRounds: 1,
    workloads,
    rows: [
      { label: "native DIB, W2's work (`-t tar debian-minimal`, root)", ...NATIVE },
      { label: "vmdib cold: whole build", workload: "w1-cold", metric: "total", ref: NATIVE },
      { label: "vmdib cold: of which the appliance", workload: "w1-cold", metric: "appliance" },
      { label: "vmdib warm: whole build (tree cache hit)", workload: "w1-warm", metric: "total", ref: NATIVE },
      { label: "vmdib edited install.d: whole build", workload: "w1-edited", metric: "total", ref: NATIVE },
    ],
    goals: [
      {
        text: "W1 warm ≤ 1× native DIB's W2 (a rebuild through a VM that beats root on bare metal; issue 5)",
        numerator: { workload: "w1-warm", metric: "total" },
        denominator: NATIVE,
        max: 1,
      },
    ],
    async facts(): Promise<GroupFacts> {
      const tables: FactTable[] = [];
      const notes: string[] = [];
      const verdicts: string[] = [];
      const r = rssFacts(rss);
      if (r.table) tables.push(r.table);
      if (r.verdict) verdicts.push(r.verdict);
      const sizeRows: string[][] = [];
      let worst: { ours: number; dib: number } | undefined;
      for (const [w, path] of outputs) {
        const c = await dibConversion(path, env).catch((err: unknown) => {
          notes.push(`Converting ${w}'s qcow2 the DIB way failed: ${(err as Error).message}`);
          return undefined;
        });
        if (!c) continue;
        if (!worst || c.ours / c.dib > worst.ours / worst.dib) worst = c;
        sizeRows.push([w, formatBytes(c.ours), formatBytes(c.dib), `${(c.ours / c.dib).toFixed(3)}×`]);
      }
      if (sizeRows.length) {
        tables.push({
          title: "Output size: vmdib's qcow2 and DIB's conversion of the same disk",
          header: ["build", "vmdib qcow2", "`qemu-img convert -c` of the same raw (DIB's default)", "ratio"],
          rows: sizeRows,
        });
      }
      if (worst) {
        verdicts.push(
          `the output qcow2 no larger than DIB's for the same tree (issue 5) — ${formatBytes(worst.ours)} vs ` +
            `${formatBytes(worst.dib)} from DIB's conversion of the same raw disk: ` +
            `**${worst.ours <= worst.dib ? "met" : "not met"}** for the conversion. Native DIB cannot build \`vm\` ` +
            "here (the host kernel has no device-mapper for its partitioned loop device), so the tree itself is " +
            "compared in W2 (tar sizes).",
        );
      }
      const steps = stepsTable(runs);
      if (steps) tables.push(steps);
      const dibTar = dibSizes.get("w1-dib-native");
      if (dibTar !== undefined)
        notes.push(`Native DIB's tar (W2's output, made for the reference row): ${formatBytes(dibTar)}.`);
      notes.push(
        "One round by default (`ROUNDS=N` for more): each W1 build takes minutes under TCG. Each round's cold " +
          "build gets a new cache directory, which that round's warm and edited builds then use.",
        "Downloads come from the same mirror for every row (DIB_DISTRIBUTION_MIRROR, else the host's apt sources); " +
          "cold vmdib runs download every index and .deb again into their empty cache, as native DIB does into " +
          "its empty DIB_IMAGE_CACHE.",
      );
      return { tables, notes, verdicts };
    },
  };
}

// ---------------------------------------------------------------- W2

export function w2Group(o: BuildGroupOptions): Group {
  const { env } = o;
  const rss = new Map<string, number[]>();
  const runs = new Map<string, VmdibRun>();
  const tarSizes = new Map<string, number>();
  const outcomes = new Map<string, string>();
  let vdib: { dir: string; env: NodeJS.ProcessEnv } | undefined;
  let debos: { dir: string; env: NodeJS.ProcessEnv } | undefined;

  const workloads = (): Workload[] => [
    nativeDibWorkload("w2-dib-native", o, tarSizes),
    {
      name: "w2-vmdib-cold",
      describe:
        "`vmdib build --json -o OUT -t tar debian-minimal` (`bin/vmdib`, the current user) with a new, empty " +
        "`VMDIB_CACHE_DIR` (appliance included, as in w1-cold).",
      async prepare() {
        target(env);
      },
      async run(round, signal): Promise<RunResult> {
        const dir = await mkdtemp(join(tmpdir(), `vmdib-bench-w2-${round}-`));
        try {
          const r = await vmdibBuild(["-o", join(dir, "out", "w2"), "-t", "tar", "debian-minimal"], {
            env,
            cache: join(dir, "cache"),
            cwd: dir,
            signal,
          });
          runs.set("w2-vmdib-cold", r);
          if (r.ran.peakRssKb !== undefined)
            rss.set("w2-vmdib-cold", [...(rss.get("w2-vmdib-cold") ?? []), r.ran.peakRssKb]);
          const tar = r.events.outputs.find((x) => x.format === "tar");
          if (tar) tarSizes.set("w2-vmdib-cold", tar.bytes);
          return {
            ms: { total: r.ran.ms, ...(r.events.applianceMs !== undefined ? { appliance: r.events.applianceMs } : {}) },
          };
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    },
    {
      name: "virt-dib",
      describe:
        "`virt-dib` (guestfs-tools) as the current user, DIB's own elements (`-B`/`-p` from python3-diskimage-" +
        "builder), `--formats tgz debian-minimal`, the same DIB_* settings as native DIB carried with `--envvar`; " +
        "libguestfs's direct backend under TCG booting the vmdib appliance's kernel (as in the ready group). Timed " +
        "from spawn to exit, however it ends (see the notes).",
      async prepare() {
        const tool = await which("virt-dib", env);
        if (!tool) throw new NotMeasured("virt-dib is not installed", "`sudo apt-get install guestfs-tools`");
        const dir = await mkdtemp(join(tmpdir(), "vmdib-bench-virt-dib-"));
        try {
          const kernel = await superminKernel(await o.shared(), env, dir, o.log);
          vdib = {
            dir,
            env: {
              ...env,
              LIBGUESTFS_BACKEND: "direct",
              LIBGUESTFS_BACKEND_SETTINGS: "force_tcg",
              ...kernel,
            },
          };
        } catch (err) {
          await rm(dir, { recursive: true, force: true });
          throw err;
        }
      },
      async run(round, signal): Promise<RunResult> {
        if (!vdib) throw new Error("not prepared");
        const { mirror, release } = target(env);
        const settings = dibEnv(mirror, release);
        const cache = join(vdib.dir, `cache-${round}`);
        await mkdir(cache, { recursive: true });
        const python = (await which("python3", env)) ?? "python3";
        const r = await runTimed(
          "virt-dib",
          [
            // virt-dib looks for a `python` that Debian 12 does not have.
            "--python",
            python,
            "-B",
            join(DIB_PYTHON_DIR, "lib"),
            "-p",
            join(DIB_PYTHON_DIR, "elements"),
            ...Object.keys(settings).flatMap((k) => ["--envvar", k]),
            "--formats",
            "tgz",
            "--name",
            join(vdib.dir, `out-${round}`),
            "debian-minimal",
          ],
          {
            env: { ...vdib.env, ...settings, LIBGUESTFS_CACHEDIR: cache },
            cwd: vdib.dir,
            timeoutMs: PEER_TIMEOUT_MS,
            ...(signal ? { signal } : {}),
          },
        );
        // Its failure is what is measured, but not one the bench caused by stopping it.
        if (signal?.aborted) throw new Error("interrupted");
        const lines = r.lines.map((l) => l.text);
        const last = lines.filter((l) => /^\[\s*[\d.]+\] /.test(l)).pop();
        outcomes.set(
          "virt-dib",
          r.code === 0
            ? `virt-dib built the tarball in ${formatSeconds(r.ms)}.`
            : `virt-dib exited ${r.code} after ${formatSeconds(r.ms)}; its last step: \`${last ?? "?"}\`; its error: ` +
                `\`${failureLine(lines)}\`.`,
        );
        await rm(cache, { recursive: true, force: true });
        return { ms: { exit: r.ms } };
      },
      async cleanup() {
        if (vdib) await rm(vdib.dir, { recursive: true, force: true });
      },
    },
    {
      name: "debos",
      describe:
        "debos with an equivalent recipe (debootstrap minbase of the same release from the same mirror, packed as a " +
        "tarball) as the current user: `-b qemu` (fakemachine's TCG backend) and `-b auto` (what it picks: without a " +
        "usable /dev/kvm it runs the recipe on the host, without a VM). debos " +
        "is not installed (its Recommends bring systemd-resolved, which breaks DNS here): `apt-get download` of " +
        `${DEBOS_DEBS.join(", ")} and \`dpkg-deb -x\` into a temporary directory (untimed). Timed from spawn to exit.`,
      async prepare() {
        const apt = await which("apt-get", env);
        const dpkgDeb = await which("dpkg-deb", env);
        if (!apt || !dpkgDeb) throw new NotMeasured("apt-get and dpkg-deb are needed to unpack debos (Debian only)");
        const dir = await mkdtemp(join(tmpdir(), "vmdib-bench-debos-"));
        try {
          await mustRun(apt, ["download", ...DEBOS_DEBS], env, dir);
          const root = join(dir, "root");
          for (const name of DEBOS_DEBS) {
            const deb = (await readdir(dir)).find((f) => f.startsWith(`${name}_`) && f.endsWith(".deb"));
            if (!deb) throw new NotMeasured(`apt-get download gave no ${name} package`);
            await mustRun(dpkgDeb, ["-x", join(dir, deb), root], env);
          }
          const { mirror, release } = target(env);
          await writeFile(join(dir, "recipe.yaml"), debosRecipe(mirror, release));
          debos = {
            dir,
            env: {
              ...env,
              PATH: [join(root, "usr", "bin"), join(root, "bin"), env.PATH ?? ""].join(":"),
              LD_LIBRARY_PATH: join(root, "usr", "lib", "x86_64-linux-gnu"),
            },
          };
        } catch (err) {
          await rm(dir, { recursive: true, force: true });
          throw err;
        }
      },
      async run(round, signal): Promise<RunResult> {
        if (!debos) throw new Error("not prepared");
        const ms: Record<string, number> = {};
        const told: string[] = [];
        for (const backend of ["qemu", "auto"]) {
          const art = join(debos.dir, `artifacts-${round}-${backend}`);
          await mkdir(art, { recursive: true });
          const r = await runTimed("debos", ["-b", backend, "--artifactdir", art, join(debos.dir, "recipe.yaml")], {
            env: debos.env,
            cwd: debos.dir,
            timeoutMs: PEER_TIMEOUT_MS,
            ...(signal ? { signal } : {}),
          });
          if (signal?.aborted) throw new Error("interrupted");
          ms[backend] = r.ms;
          const lines = r.lines.map((l) => l.text.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, ""));
          told.push(
            r.code === 0
              ? `\`-b ${backend}\` built the tarball in ${formatSeconds(r.ms)}`
              : `\`-b ${backend}\` exited ${r.code} after ${formatSeconds(r.ms)}: \`${failureLine(lines)}\``,
          );
        }
        outcomes.set("debos", `debos ${told.join("; ")}.`);
        return { ms };
      },
      async cleanup() {
        if (debos) await rm(debos.dir, { recursive: true, force: true });
      },
    },
  ];

  const NATIVE = { workload: "w2-dib-native", metric: "total" } as const;
  return {
    name: "w2",
    title: "W2: `debian-minimal -t tar` — vmdib, native DIB and the peers (`make bench BENCH=w2`)",
    defaultRounds: 1,
    workloads,
    rows: [
      { label: "native DIB as root", ...NATIVE },
      { label: "vmdib cold: whole build", workload: "w2-vmdib-cold", metric: "total", ref: NATIVE },
      { label: "vmdib cold: of which the appliance", workload: "w2-vmdib-cold", metric: "appliance" },
      { label: "virt-dib: spawn → exit (failed, see notes)", workload: "virt-dib", metric: "exit", ref: NATIVE },
      { label: "debos -b qemu: spawn → exit (see notes)", workload: "debos", metric: "qemu" },
      { label: "debos -b auto: spawn → exit (see notes)", workload: "debos", metric: "auto" },
    ],
    goals: [
      {
        text: "W2 cold ≤ 4× native DIB (issue 5)",
        numerator: { workload: "w2-vmdib-cold", metric: "total" },
        denominator: NATIVE,
        max: 4,
      },
    ],
    async facts(): Promise<GroupFacts> {
      const tables: FactTable[] = [];
      const notes: string[] = [];
      const verdicts: string[] = [];
      const r = rssFacts(rss);
      if (r.table) tables.push(r.table);
      if (r.verdict) verdicts.push(r.verdict);
      const ours = tarSizes.get("w2-vmdib-cold");
      const dib = tarSizes.get("w2-dib-native");
      if (ours !== undefined || dib !== undefined) {
        tables.push({
          title: "The tree: size of the tar each built",
          header: ["", "vmdib (its own elements)", "native DIB (DIB's elements)"],
          rows: [["tar", ours !== undefined ? formatBytes(ours) : "–", dib !== undefined ? formatBytes(dib) : "–"]],
        });
      }
      const steps = stepsTable(runs);
      if (steps) tables.push(steps);
      for (const w of ["virt-dib", "debos"]) {
        const said = outcomes.get(w);
        if (said) notes.push(said);
      }
      notes.push(
        "One round by default (`ROUNDS=N` for more). virt-dib and debos are timed to their exit: neither builds " +
          "the image here, so their rows say how long they take to fail, not to build.",
        "vmdib builds with its own elements (`elements/`), native DIB and virt-dib with DIB 3.13's: the same " +
          "release, mirror and kind of tree, not byte-identical trees.",
      );
      return { tables, notes, verdicts };
    },
  };
}
