// Host facts for the VM: which QEMU, and which accelerator really runs guest code here — found by booting a tiny
// guest with a timeout (KVM that opens but hangs is common), remembered per host in the cache directory.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { constants as fsc } from "node:fs";
import { access, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { arch, availableParallelism, hostname, release, tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { UsageError, VmdibError } from "../errors.js";
import { cacheDir } from "../paths.js";
import { ACCELS, type Accel, PROBE_MARKER, probeArgv } from "./qemu.js";

/** The appliance is amd64, whatever the host is. */
export const QEMU_BINARY = "qemu-system-x86_64";

export interface QemuInfo {
  readonly binary: string;
  /** First line of `--version`, e.g. "QEMU emulator version 7.2.22 (Debian ...)". */
  readonly version: string;
}

export interface AccelVerdict {
  readonly accel: Accel;
  /** Why this accelerator, in words for the user. */
  readonly reason: string;
  /** True when the verdict came from the per-host cache rather than a probe just now. */
  readonly cached: boolean;
}

/** `--accel` values; anything else is a usage error. */
export function parseAccel(value: string): Accel {
  if ((ACCELS as readonly string[]).includes(value)) return value as Accel;
  throw new UsageError(`unknown accelerator '${value}'`, { hint: `use one of: ${ACCELS.join(", ")}` });
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, fsc.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Find QEMU on PATH and read its version; a clear error with install hints when it is missing. */
export async function findQemu(env: NodeJS.ProcessEnv = process.env, platform = process.platform): Promise<QemuInfo> {
  let binary: string | undefined;
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (dir && (await isExecutable(join(dir, QEMU_BINARY)))) {
      binary = join(dir, QEMU_BINARY);
      break;
    }
  }
  if (!binary) {
    throw new VmdibError(`${QEMU_BINARY} not found on PATH`, {
      hint:
        platform === "darwin"
          ? "install QEMU with `brew install qemu`"
          : "install QEMU: on Debian/Ubuntu `sudo apt-get install qemu-system-x86` (on macOS: `brew install qemu`)",
    });
  }
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(binary, ["--version"], { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    child.stdout.on("data", (d: Buffer) => {
      text += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(text) : reject(new Error(`${binary} --version exited with ${code}`)),
    );
  }).catch((err: unknown) => {
    throw new VmdibError(`${binary} does not run`, { cause: err, hint: "check the QEMU installation" });
  });
  const version = out.split("\n")[0]?.trim() ?? "unknown";
  const parsed = parseQemuVersion(version);
  if (parsed && compareVersion(parsed, MIN_QEMU_VERSION) < 0) {
    throw new VmdibError(
      `${binary} is QEMU ${parsed.join(".")}, too old: vmdib needs QEMU ${MIN_QEMU_VERSION.join(".")} or newer`,
      {
        hint:
          platform === "darwin"
            ? "upgrade QEMU with `brew upgrade qemu`, or put a newer qemu-system-x86_64 first on PATH"
            : "install a newer QEMU (Debian 11+/Ubuntu 22.04+ ship one: `sudo apt-get install qemu-system-x86`), or put a newer qemu-system-x86_64 first on PATH",
      },
    );
  }
  return { binary, version };
}

/**
 * The oldest QEMU whose flags vmdib uses: booting an uncompressed vmlinux through its PVH entry came with 4.0, and
 * accelerator properties on `-accel` (`tcg,thread=multi`) with 4.2.
 */
export const MIN_QEMU_VERSION: readonly [number, number, number] = [4, 2, 0];

/** [major, minor, micro] from `qemu-system-x86_64 --version`'s first line, or undefined when it has no version. */
export function parseQemuVersion(line: string): [number, number, number] | undefined {
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(line);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

function compareVersion(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
}

export interface ProbeOutcome {
  readonly ok: boolean;
  readonly detail: string;
}

/** Boot the kernel without initramfs under `accel`; ok when its banner appears within the timeout. */
export async function probeAccel(qemu: string, kernel: string, accel: Accel, timeoutMs: number): Promise<ProbeOutcome> {
  return await new Promise<ProbeOutcome>((resolve) => {
    // cwd: a QEMU that aborts (KVM's MSR assertion here) must not leave a core file in the user's directory.
    const child = spawn(qemu, probeArgv(kernel, accel), { stdio: ["ignore", "pipe", "pipe"], cwd: tmpdir() });
    let out = "";
    let err = "";
    let done = false;
    const finish = (o: ProbeOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      resolve(o);
    };
    const timer = setTimeout(
      () => finish({ ok: false, detail: `the probe guest printed nothing for ${Math.round(timeoutMs / 1000)} s` }),
      timeoutMs,
    );
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("latin1");
      if (out.includes(PROBE_MARKER)) finish({ ok: true, detail: "the probe guest booted" });
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("error", (e) => finish({ ok: false, detail: e.message }));
    child.on("close", (code, sig) => {
      const why = err.trim().split("\n").slice(-1)[0] || `exit ${code ?? sig}`;
      finish({ ok: false, detail: `QEMU failed before the guest booted: ${why}` });
    });
  });
}

interface ProbeDeps {
  readonly platform: NodeJS.Platform;
  readonly hostArch: string;
  readonly kvmAccessible: () => Promise<boolean | "missing">;
  readonly probe: (accel: Accel) => Promise<ProbeOutcome>;
}

/** The decision itself, with the effects injected: candidates in order, first that boots wins, else TCG. */
export async function decideAccel(deps: ProbeDeps, timeoutS: number): Promise<{ accel: Accel; reason: string }> {
  if (deps.platform === "linux") {
    const kvm = await deps.kvmAccessible();
    if (kvm === "missing") return { accel: "tcg", reason: "no /dev/kvm; using TCG (software emulation)" };
    if (!kvm) {
      return {
        accel: "tcg",
        reason:
          "/dev/kvm is not accessible to this user (read-write access, usually via group kvm, makes VMs fast); using TCG",
      };
    }
    const r = await deps.probe("kvm");
    if (r.ok) return { accel: "kvm", reason: "KVM boots guests" };
    const why = r.detail.includes("printed nothing") ? `the probe guest hung for ${timeoutS} s` : r.detail;
    return { accel: "tcg", reason: `KVM present but ${why}; using TCG` };
  }
  if (deps.platform === "darwin") {
    // HVF runs guests of the host's own architecture only; an amd64 appliance on Apple silicon is emulated.
    if (deps.hostArch !== "x64")
      return { accel: "tcg", reason: "HVF cannot run an amd64 guest on this CPU; using TCG" };
    const r = await deps.probe("hvf");
    if (r.ok) return { accel: "hvf", reason: "HVF boots guests" };
    return { accel: "tcg", reason: `HVF present but ${r.detail}; using TCG` };
  }
  return { accel: "tcg", reason: `no hardware accelerator support for ${deps.platform}; using TCG` };
}

async function kvmAccessible(): Promise<boolean | "missing"> {
  try {
    await access("/dev/kvm", fsc.F_OK);
  } catch {
    return "missing";
  }
  try {
    await access("/dev/kvm", fsc.R_OK | fsc.W_OK);
    return true;
  } catch {
    return false;
  }
}

export interface ChooseAccelOptions {
  readonly qemu: QemuInfo;
  /** The appliance kernel, booted by the probe. */
  readonly kernel: string;
  /** From `--accel`: skips the probe. */
  readonly override?: Accel | undefined;
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

/** Pick the accelerator: the override, else the cached verdict for this host, else a fresh probe (then cached). */
export async function chooseAccel(opts: ChooseAccelOptions): Promise<AccelVerdict> {
  if (opts.override) return { accel: opts.override, reason: `--accel ${opts.override}`, cached: false };
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const k = await stat(opts.kernel);
  // Keyed by everything that can change the answer: QEMU, the kernel, the host and its kernel.
  const key = createHash("sha256")
    .update(
      JSON.stringify([opts.qemu.version, opts.kernel, k.size, k.mtimeMs, hostname(), release(), process.platform]),
    )
    .digest("hex")
    .slice(0, 16);
  const file = join(cacheDir(opts.env), "accel", `${key}.json`);
  try {
    const saved = JSON.parse(await readFile(file, "utf8")) as { accel: string; reason: string };
    if ((ACCELS as readonly string[]).includes(saved.accel)) {
      return { accel: saved.accel as Accel, reason: saved.reason, cached: true };
    }
  } catch {
    // no verdict yet (or unreadable): probe
  }
  const verdict = await decideAccel(
    {
      platform: process.platform,
      hostArch: arch(),
      kvmAccessible,
      probe: (a) => probeAccel(opts.qemu.binary, opts.kernel, a, timeoutMs),
    },
    Math.round(timeoutMs / 1000),
  );
  await mkdir(join(cacheDir(opts.env), "accel"), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(verdict)}\n`);
  await rename(tmp, file);
  return { ...verdict, cached: false };
}

/** All host cores: TCG's thread=multi turns each vCPU into a host thread. */
export function hostCpus(): number {
  return availableParallelism();
}
