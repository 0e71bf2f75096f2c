// Booting a disk image vmdib built (not the appliance): the pure QEMU argv (imageBootArgv), console parsers and
// checks, and the effectful runners behind `vmdib boot` (console on the terminal) and `vmdib test` (headless checks).
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { constants as fsc } from "node:fs";
import { access, chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, extname, join, resolve } from "node:path";
import getPort from "get-port";
import ssh2 from "ssh2";
import { CleanupStack } from "../cleanup.js";
import { UsageError, VmdibError } from "../errors.js";
import { pidAlive } from "../lock.js";
import { cacheDir } from "../paths.js";
import { redactLog } from "../redact.js";
import { type AccelVerdict, chooseAccel, findQemu, hostCpus, type QemuInfo } from "./probe.js";
import { type Accel, type HostFacts, machineArgv, qemuOptValue } from "./qemu.js";
import { describeExit, type QemuExit, tailFile } from "./ready.js";

// ssh2 is CommonJS: its named exports are only reachable through the default export under ESM.
const { Client, utils: sshUtils } = ssh2;

// ---------------------------------------------------------------------------------------------------------------
// Pure part: formats, firmware, argv, console parsing, checks.
// ---------------------------------------------------------------------------------------------------------------

/** Disk formats QEMU reads that vmdib writes (`-t`), by QEMU's driver name (vhd is QEMU's "vpc"). */
export type ImageFormat = "qcow2" | "raw" | "vpc" | "vmdk" | "vdi" | "vhdx";
export const IMAGE_FORMATS: readonly ImageFormat[] = ["qcow2", "raw", "vpc", "vmdk", "vdi", "vhdx"];

const EXTENSION_FORMATS: Readonly<Record<string, ImageFormat>> = {
  ".qcow2": "qcow2",
  ".raw": "raw",
  ".vhd": "vpc",
  ".vmdk": "vmdk",
  ".vdi": "vdi",
  ".vhdx": "vhdx",
};

/** The format an image's name promises (DIB names outputs `<name>.<type>`); undefined when the name says nothing. */
export function formatFromExtension(path: string): ImageFormat | undefined {
  return EXTENSION_FORMATS[extname(path).toLowerCase()];
}

/** The `format` field of `qemu-img info --output=json`, if it is one we boot. */
export function parseQemuImgInfo(json: string): ImageFormat | undefined {
  const info = JSON.parse(json) as { format?: unknown };
  return typeof info.format === "string" && (IMAGE_FORMATS as readonly string[]).includes(info.format)
    ? (info.format as ImageFormat)
    : undefined;
}

/** UEFI firmware: OVMF's read-only code and a per-run writable copy of its variable store. */
export interface UefiFirmware {
  readonly code: string;
  readonly vars: string;
}

/**
 * OVMF code/vars pairs in order of preference. The vars file must match the code's flash size (4M with 4M). Secure
 * Boot builds are left out on purpose: they need SMM emulation and enrolled keys, which a test boot does not want.
 */
export const OVMF_PAIRS: readonly { readonly code: string; readonly vars: string }[] = [
  { code: "OVMF_CODE_4M.fd", vars: "OVMF_VARS_4M.fd" },
  { code: "OVMF_CODE.fd", vars: "OVMF_VARS.fd" },
  // Homebrew's QEMU ships edk2 under these names.
  { code: "edk2-x86_64-code.fd", vars: "edk2-i386-vars.fd" },
];
/** Where distributions put OVMF (Debian/Ubuntu, Fedora, Arch, Homebrew). */
export const OVMF_DIRS: readonly string[] = [
  "/usr/share/OVMF",
  "/usr/share/ovmf/x64",
  "/usr/share/edk2/ovmf",
  "/usr/share/edk2/x64",
  "/opt/homebrew/share/qemu",
  "/usr/local/share/qemu",
];

/** Pick the firmware pair from the files present in each directory (pure: the listing is the input). */
export function pickOvmf(listing: ReadonlyMap<string, readonly string[]>): UefiFirmware | undefined {
  for (const [dir, files] of listing) {
    for (const pair of OVMF_PAIRS) {
      if (files.includes(pair.code) && files.includes(pair.vars)) {
        return { code: join(dir, pair.code), vars: join(dir, pair.vars) };
      }
    }
  }
  return undefined;
}

/** Where the guest's serial console goes. */
export type ConsoleMode =
  /** The user's terminal: QEMU multiplexes serial and its monitor on stdio; Ctrl-A X quits, Ctrl-A C the monitor. */
  | "terminal"
  /** A pipe the controller reads (QEMU's stdout): the guest's console is data for checks. */
  | "controller";

/** Boot a kernel directly instead of the image's bootloader (plumbing tests; debugging an image's kernel). */
export interface DirectKernel {
  readonly kernel: string;
  readonly initrd?: string;
  readonly append: string;
}

/** One boot of an image. */
export interface ImageBootSpec {
  readonly image: string;
  readonly format: ImageFormat;
  readonly memoryMiB: number;
  /** Virtual CPUs; defaults to the host's. */
  readonly cpus?: number;
  /** Writes go to a throwaway overlay: the image file is never changed. */
  readonly snapshot: boolean;
  readonly console: ConsoleMode;
  /** Every byte of the serial console is also written here. */
  readonly serialLog: string;
  /** Host port on 127.0.0.1 forwarded to the guest's port 22. */
  readonly sshPort: number;
  readonly uefi?: UefiFirmware;
  readonly direct?: DirectKernel;
  readonly pidFile?: string;
}

/** The argv (without the QEMU binary) that boots a built image. */
export function imageBootArgv(spec: ImageBootSpec, host: HostFacts): string[] {
  const serial =
    spec.console === "terminal"
      ? // mux=on shares stdio between the serial port and QEMU's monitor, which is what gives the Ctrl-A escapes
        // (Ctrl-A X quits, Ctrl-A C toggles the monitor), as with -nographic. signal=off: Ctrl-C is a key for the
        // guest, not a signal that kills QEMU. QEMU puts the terminal into raw mode itself.
        `stdio,id=con0,mux=on,signal=off,logfile=${qemuOptValue(spec.serialLog)}`
      : // The controller reads the console from QEMU's stdout as it happens; logfile= keeps all of it for the
        // report's tail.
        `stdio,id=con0,signal=off,logfile=${qemuOptValue(spec.serialLog)}`;
  const argv: string[] = [
    ...machineArgv(host, spec.cpus ?? host.cpus, spec.memoryMiB),
    "-chardev",
    serial,
    "-serial",
    "chardev:con0",
  ];
  if (spec.console === "terminal") argv.push("-mon", "chardev=con0,mode=readline");
  if (spec.snapshot) {
    // Every write goes to a temporary overlay (in $TMPDIR) that QEMU throws away: testing never changes the image.
    argv.push("-snapshot");
  }
  if (spec.uefi) {
    argv.push(
      // OVMF's code is shared and read-only; unit 1 is this run's own copy of the variable store (boot entries).
      "-drive",
      `if=pflash,format=raw,unit=0,readonly=on,file=${qemuOptValue(spec.uefi.code)}`,
      "-drive",
      `if=pflash,format=raw,unit=1,file=${qemuOptValue(spec.uefi.vars)}`,
    );
  } else {
    argv.push(
      // strict=on: SeaBIOS boots only the image (bootindex below), never falls through to network boot.
      // reboot-timeout: when nothing is bootable SeaBIOS "reboots" after 1 s, which -no-reboot turns into QEMU
      // exiting — an unbootable image fails at once instead of hanging until the timeout.
      "-boot",
      "strict=on,reboot-timeout=1000",
    );
  }
  if (spec.direct) {
    argv.push("-kernel", spec.direct.kernel, "-append", spec.direct.append);
    if (spec.direct.initrd) argv.push("-initrd", spec.direct.initrd);
  }
  argv.push(
    // The image as a virtio disk (/dev/vda in the guest), addressed as a drive so its format is explicit: QEMU must
    // never guess a raw image's format (a guest could write a qcow2 header into it).
    "-drive",
    `file=${qemuOptValue(spec.image)},if=none,id=disk0,format=${spec.format}` +
      // With -snapshot the writes are thrown away anyway, so skipping flushes is free speed. discard=unmap keeps a
      // persistent image sparse when the guest trims.
      (spec.snapshot ? ",cache=unsafe" : ",discard=unmap"),
    "-device",
    "virtio-blk-pci,drive=disk0,bootindex=1",
    // Entropy from the host: a first boot generates SSH host keys, and getrandom() can block for a long time without.
    "-device",
    "virtio-rng-pci",
    // User-mode networking needs no privileges; the SSH forward binds 127.0.0.1 only.
    "-netdev",
    `user,id=net0,hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22`,
    // romfile= (empty): no iPXE option ROM, so the firmware cannot try network boot when the disk does not boot.
    "-device",
    "virtio-net-pci,netdev=net0,romfile=",
  );
  if (spec.pidFile) argv.push("-pidfile", spec.pidFile);
  return argv;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: terminal control sequences are stripped on purpose
const ANSI = /\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[=>c78])/g;

/** Console bytes as lines of text: escape sequences and carriage returns removed. */
export function consoleText(raw: string): string {
  return raw.replace(ANSI, "").replace(/\r/g, "");
}

/** A getty's prompt ("debian login: ") at the start of a line. */
const LOGIN_PROMPT = /(?:^|\n)[ \t]*([A-Za-z0-9][A-Za-z0-9._-]*[ \t]+)?login:[ \t]*(?:$|\n)/;

/** The login prompt line when the console shows one. */
export function findLoginPrompt(console: string): string | undefined {
  const m = LOGIN_PROMPT.exec(consoleText(console));
  return m ? m[0].trim() : undefined;
}

/**
 * The kernel command line as the kernel printed it early in boot ("Command line: ..." on x86, "Kernel command
 * line: ..." everywhere). Both are KERN_NOTICE/INFO: a `quiet` or `loglevel=` below 6 hides them.
 */
export function kernelCmdlineFromConsole(console: string): string | undefined {
  const m = /(?:^|\n)(?:\[[ \d.]+\] )?(?:Kernel c|C)ommand line: ([^\n]*)/.exec(consoleText(console));
  return m?.[1]?.trim();
}

/** Kernel command-line words (no quoting: the kernel's own quoting rules are not needed for the checks). */
function words(cmdline: string): string[] {
  return cmdline.split(/\s+/).filter(Boolean);
}

export type CheckId = "login-prompt" | "console-args" | "root-by-label" | "ssh";
export type CheckStatus = "pass" | "fail" | "skip";

export interface CheckResult {
  readonly id: CheckId;
  readonly title: string;
  readonly status: CheckStatus;
  /** What was seen, in words (the evidence for a pass, the reason for a fail). */
  readonly detail: string;
}

export const CHECK_TITLES: Readonly<Record<CheckId, string>> = {
  "login-prompt": "reached a login prompt on the serial console",
  "console-args": "kernel command line has the serial console (console=ttyS0)",
  "root-by-label": "root file system mounted by label (root=LABEL=..., not a build loop device)",
  ssh: "logged in over SSH and ran a command",
};

function check(id: CheckId, status: CheckStatus, detail: string): CheckResult {
  return { id, title: CHECK_TITLES[id], status, detail };
}

/** Check 2 from a command line (from the console, or /proc/cmdline over SSH). */
export function checkConsoleArgs(cmdline: string | undefined, source: string): CheckResult {
  if (cmdline === undefined) {
    return check(
      "console-args",
      "fail",
      "the kernel printed no command line on the serial console (is `quiet` on it? with --ssh-key, /proc/cmdline is read instead)",
    );
  }
  const consoles = words(cmdline).filter((w) => w.startsWith("console="));
  const serial = consoles.find((w) => /^console=ttyS0(,|$)/.test(w));
  return serial
    ? check("console-args", "pass", `${serial} (${source})`)
    : check(
        "console-args",
        "fail",
        consoles.length
          ? `${consoles.join(" ")} but no console=ttyS0 (${source})`
          : `no console= argument at all (${source}): ${cmdline}`,
      );
}

/** Check 3 from a command line, plus what SSH saw of / when it ran. */
export function checkRootByLabel(
  cmdline: string | undefined,
  source: string,
  mounted?: { source: string; label: string },
): CheckResult {
  if (cmdline === undefined) {
    return check("root-by-label", "fail", "no kernel command line to read root= from");
  }
  const roots = words(cmdline).filter((w) => w.startsWith("root="));
  const root = roots[roots.length - 1]; // the kernel uses the last one
  if (!root) return check("root-by-label", "fail", `no root= argument (${source}): ${cmdline}`);
  if (/^root=\/dev\/loop/.test(root)) {
    return check(
      "root-by-label",
      "fail",
      `${root}: the bootloader config names the build machine's loop device (set GRUB_DEVICE=LABEL=... and GRUB_DISABLE_LINUX_UUID=true in the image build)`,
    );
  }
  if (!/^root=LABEL=./.test(root)) return check("root-by-label", "fail", `${root} is not root=LABEL=... (${source})`);
  const label = root.slice("root=LABEL=".length);
  if (mounted) {
    if (mounted.label && mounted.label !== label) {
      return check(
        "root-by-label",
        "fail",
        `${root}, but / is ${mounted.source} labelled '${mounted.label}' (findmnt over SSH)`,
      );
    }
    return check(
      "root-by-label",
      "pass",
      `${root}; / is ${mounted.source}${mounted.label ? ` (${mounted.label})` : ""}`,
    );
  }
  return check("root-by-label", "pass", `${root} (${source})`);
}

/** Console symptoms of broken images, and what they usually mean (in the order a boot meets them). */
const SYMPTOMS: readonly { readonly re: RegExp; readonly hint: (m: RegExpExecArray) => string }[] = [
  {
    re: /grub rescue>|error: (?:no such device|unknown filesystem|file .* not found)[^\n]*/,
    hint: (m) =>
      `GRUB could not find its files (${m[0].trim()}): the grub.cfg or core image names a disk or UUID the image does not have`,
  },
  {
    re: /ALERT!\s+(\S+) does not exist/,
    hint: (m) =>
      `the initramfs found no root device ${m[1]}: the root file system's label differs, or the initramfs lacks virtio_blk`,
  },
  {
    re: /Gave up waiting for root (?:file system )?device/,
    hint: () => "the initramfs gave up waiting for the root device (a wrong root= or a missing disk driver)",
  },
  {
    re: /Kernel panic - not syncing: ([^\n]*)/,
    hint: (m) => `kernel panic: ${m[1]?.trim()}`,
  },
  {
    re: /You are in emergency mode|Give root password for maintenance/,
    hint: () => "systemd fell into emergency mode (often an /etc/fstab entry that cannot be mounted)",
  },
];

/** Hints for a failed boot from its console: what broke, in words, with the line that shows it. */
export function diagnoseConsole(console: string): string[] {
  const text = consoleText(console);
  const out: string[] = [];
  for (const s of SYMPTOMS) {
    const m = s.re.exec(text);
    if (m) out.push(s.hint(m));
  }
  const failed = [...text.matchAll(/\[FAILED\] Failed to start ([^\n]*)/g)].map((m) => m[1]?.trim() ?? "");
  if (failed.length) out.push(`systemd units failed: ${[...new Set(failed)].slice(0, 8).join("; ")}`);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Effects: finding things on the host.
// ---------------------------------------------------------------------------------------------------------------

/** The image's format: from its name when that is conclusive, else from `qemu-img info` (raw is never guessed). */
export async function detectImageFormat(qemuImg: string, image: string): Promise<ImageFormat> {
  const byName = formatFromExtension(image);
  if (byName) return byName;
  const out = await new Promise<string>((res, rej) => {
    // -U (force-share): read the header even while another QEMU holds the image open.
    const child = spawn(qemuImg, ["info", "-U", "--output=json", image], { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      text += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("error", rej);
    child.on("close", (code) => (code === 0 ? res(text) : rej(new Error(err.trim() || `exit ${code}`))));
  }).catch((err: unknown) => {
    throw new VmdibError(`cannot tell the format of ${image}`, {
      cause: err,
      hint: `name it after its format (.qcow2, .raw, .vhd, .vmdk, .vdi) or install qemu-img (Debian: qemu-utils): ${err instanceof Error ? err.message : String(err)}`,
    });
  });
  const format = parseQemuImgInfo(out);
  if (!format) {
    throw new VmdibError(`${image} is not a disk image format vmdib boots`, {
      hint: `qemu-img says: ${out.trim().slice(0, 200)}`,
    });
  }
  return format;
}

/** OVMF on this host, or an error saying which package to install. */
export async function findOvmf(env: NodeJS.ProcessEnv = process.env): Promise<UefiFirmware> {
  if (env.VMDIB_OVMF_CODE && env.VMDIB_OVMF_VARS) return { code: env.VMDIB_OVMF_CODE, vars: env.VMDIB_OVMF_VARS };
  const listing = new Map<string, string[]>();
  for (const dir of OVMF_DIRS) {
    listing.set(dir, await readdir(dir).catch(() => []));
  }
  const found = pickOvmf(listing);
  if (!found) {
    throw new VmdibError("no UEFI firmware (OVMF) found for --uefi", {
      hint: `install it (Debian/Ubuntu: \`sudo apt-get install ovmf\`; Fedora: edk2-ovmf), or point VMDIB_OVMF_CODE and VMDIB_OVMF_VARS at the code and vars files; looked in ${OVMF_DIRS.join(", ")}`,
    });
  }
  return found;
}

/**
 * A kernel for the accelerator probe: chooseAccel() boots one to see whether KVM/HVF really runs guests, and
 * remembers the verdict per host. The newest cached appliance kernel serves; the image's own kernel is not
 * reachable without mounting it.
 */
export async function findProbeKernel(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const root = join(cacheDir(env), "appliance");
  const candidates: { kernel: string; created: string }[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (name.startsWith(".")) continue;
    try {
      const m = JSON.parse(await readFile(join(root, name, "manifest.json"), "utf8")) as {
        createdAt?: string;
        kernel?: { file?: string };
      };
      const kernel = join(root, name, m.kernel?.file ?? "vmlinuz");
      await access(kernel, fsc.R_OK);
      candidates.push({ kernel, created: m.createdAt ?? "" });
    } catch {
      // incomplete or damaged: not usable for a probe
    }
  }
  candidates.sort((a, b) => b.created.localeCompare(a.created));
  return candidates[0]?.kernel;
}

/** The accelerator: --accel, else chooseAccel's (remembered) verdict, else TCG when there is nothing to probe with. */
export async function imageAccel(
  qemu: QemuInfo,
  override: Accel | undefined,
  env: NodeJS.ProcessEnv,
): Promise<AccelVerdict> {
  if (override) return await chooseAccel({ qemu, kernel: "", override, env });
  const kernel = await findProbeKernel(env);
  if (!kernel) {
    return {
      accel: "tcg",
      reason: "no cached appliance kernel to probe the accelerator with; using TCG (--accel kvm to try KVM)",
      cached: false,
    } satisfies AccelVerdict;
  }
  return await chooseAccel({ qemu, kernel, env });
}

async function findOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const dir of (env.PATH ?? "/usr/bin:/bin").split(":")) {
    if (!dir) continue;
    try {
      await access(join(dir, name), fsc.X_OK);
      return join(dir, name);
    } catch {
      // keep looking
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Effects: one QEMU for one image.
// ---------------------------------------------------------------------------------------------------------------

export interface ImageBootOptions {
  readonly image: string;
  readonly uefi?: boolean;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly accel?: Accel;
  readonly snapshot?: boolean;
  readonly direct?: DirectKernel;
  readonly env?: NodeJS.ProcessEnv;
  readonly signal?: AbortSignal;
  /** Progress lines for the CLI. */
  readonly log?: (line: string) => void;
}

/** A started QEMU with its run directory; the cleanup stack stops it (stopQemu) and removes the directory. */
interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<QemuExit>;
  readonly spec: ImageBootSpec;
  readonly accel: AccelVerdict;
  readonly runDir: string;
  readonly startedAt: number;
}

const SIGTERM_WAIT_MS = 5_000;
const DEFAULT_MEMORY_MIB = 1024;

function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((res) => {
    const t = setTimeout(() => res(undefined), ms);
    p.then((v) => {
      clearTimeout(t);
      res(v);
    });
  });
}

/** SIGTERM → wait → SIGKILL. A -snapshot image has nothing to save, so no polite poweroff first. */
async function stopQemu(child: ChildProcess, exited: Promise<QemuExit>, log: (l: string) => void): Promise<void> {
  if (await within(exited, 0)) return;
  child.kill("SIGTERM");
  if (await within(exited, SIGTERM_WAIT_MS)) return;
  log(`QEMU (pid ${child.pid}) ignored SIGTERM for ${SIGTERM_WAIT_MS / 1000} s; sending SIGKILL`);
  child.kill("SIGKILL");
  await exited;
}

const RUN_PREFIX = "vmdib-image-";

/**
 * Remove run directories of controllers that died without cleaning up (SIGKILL; their QEMU died with them through
 * the parent-death signal). Only directories with a controller.pid of a dead process go; others are not ours to judge.
 */
async function sweepStaleRunDirs(base: string): Promise<void> {
  for (const name of await readdir(base).catch(() => [] as string[])) {
    if (!name.startsWith(RUN_PREFIX)) continue;
    const pid = Number.parseInt(await readFile(join(base, name, "controller.pid"), "utf8").catch(() => ""), 10);
    if (Number.isInteger(pid) && pid > 0 && !pidAlive(pid)) {
      await rm(join(base, name), { recursive: true, force: true }).catch(() => {});
    }
  }
}

/** Find everything, make the run directory and start QEMU; every resource gets its undo on `stack`. */
async function startImage(
  stack: CleanupStack,
  opts: ImageBootOptions,
  console: ConsoleMode,
  stdio: "inherit" | "pipe",
): Promise<Running> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  opts.signal?.throwIfAborted();
  const image = resolve(opts.image);
  try {
    if (!(await stat(image)).isFile()) throw new Error("not a regular file");
    await access(image, fsc.R_OK);
  } catch (err) {
    throw new UsageError(`cannot read image ${opts.image}`, {
      cause: err,
      hint: "give the path of an image `vmdib build` wrote, e.g. out/debian.qcow2",
    });
  }
  const qemu = await findQemu(env);
  // qemu-img next to the QEMU we run, else the one on PATH.
  const format = await detectImageFormat(
    (await findOnPath("qemu-img", { PATH: join(qemu.binary, "..") })) ??
      (await findOnPath("qemu-img", env)) ??
      "qemu-img",
    image,
  );
  const firmware = opts.uefi ? await findOvmf(env) : undefined;
  const accel = await imageAccel(qemu, opts.accel, env);
  log(`accelerator ${accel.accel}: ${accel.reason}${accel.cached ? " (remembered)" : ""}`);

  // The run directory holds the serial log, the UEFI variable store and QEMU's -snapshot overlay (TMPDIR below):
  // removing it removes every trace of the run.
  const base = env.TMPDIR || tmpdir();
  await sweepStaleRunDirs(base);
  const runDir = await mkdtemp(join(base, RUN_PREFIX));
  stack.push("remove run directory", () => rm(runDir, { recursive: true, force: true }));
  await writeFile(join(runDir, "controller.pid"), `${process.pid}\n`);
  let uefi: UefiFirmware | undefined;
  if (firmware) {
    const vars = join(runDir, basename(firmware.vars));
    await copyFile(firmware.vars, vars);
    uefi = { code: firmware.code, vars };
  }
  const spec: ImageBootSpec = {
    image,
    format,
    memoryMiB: opts.memoryMiB ?? DEFAULT_MEMORY_MIB,
    cpus: opts.cpus ?? hostCpus(),
    snapshot: opts.snapshot ?? false,
    console,
    serialLog: join(runDir, "serial.log"),
    sshPort: await getPort({ host: "127.0.0.1" }),
    pidFile: join(runDir, "qemu.pid"),
    ...(uefi ? { uefi } : {}),
    ...(opts.direct ? { direct: opts.direct } : {}),
  };
  const argv = imageBootArgv(spec, { accel: accel.accel, cpus: hostCpus() });
  // Linux: the kernel kills QEMU the moment this process dies, however it dies (setpriv execs QEMU: same pid).
  const setpriv = process.platform === "linux" ? await findOnPath("setpriv", env) : undefined;
  const [cmd, args] = setpriv ? [setpriv, ["--pdeathsig", "SIGKILL", "--", qemu.binary, ...argv]] : [qemu.binary, argv];
  log(`starting QEMU: ${[qemu.binary, ...argv].join(" ")}`);
  const startedAt = performance.now();
  const child = spawn(cmd, args, {
    cwd: runDir,
    env: { ...env, TMPDIR: runDir },
    stdio: stdio === "inherit" ? "inherit" : ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-8192);
  });
  const exited = new Promise<QemuExit>((res) => {
    child.on("close", (code, signal) => res({ code, signal, stderr }));
    child.on("error", (err) => res({ code: null, signal: null, stderr: `${stderr}${err.message}\n` }));
  });
  // Last resort if this process exits without unwinding (an uncaught error): take QEMU down synchronously.
  const onProcessExit = () => child.kill("SIGKILL");
  process.on("exit", onProcessExit);
  stack.push("stop QEMU", async () => {
    await stopQemu(child, exited, log);
    process.off("exit", onProcessExit);
  });
  return { child, exited, spec, accel, runDir, startedAt };
}

/** Keep a failed run's whole console where the user can read it after the run directory is gone. */
async function preserveSerialLog(serialLog: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  try {
    const dir = join(cacheDir(env), "logs");
    await mkdir(dir, { recursive: true });
    const dest = join(dir, "last-image-serial.log");
    // Redacted, owner-only: an image's console can print what was baked into it (a key, a proxy URL with a password).
    await writeFile(dest, redactLog(await readFile(serialLog, "utf8")), { mode: 0o600 });
    await chmod(dest, 0o600);
    return dest;
  } catch {
    return undefined;
  }
}

/** `vmdib boot`: what the user needs to see before the console takes over the terminal. */
export interface BootBanner {
  readonly format: ImageFormat;
  readonly accel: AccelVerdict;
  readonly sshPort: number;
  readonly snapshot: boolean;
}

/**
 * Boot the image with its console on this process's terminal (stdin/stdout inherited) until QEMU exits (Ctrl-A X,
 * guest poweroff). Resolves with QEMU's exit status, 0 for a normal end.
 */
export async function bootImage(
  opts: ImageBootOptions & { readonly onStart?: (b: BootBanner) => void },
): Promise<QemuExit> {
  const stack = new CleanupStack();
  try {
    const r = await startImage(stack, opts, "terminal", "inherit");
    opts.onStart?.({ format: r.spec.format, accel: r.accel, sshPort: r.spec.sshPort, snapshot: r.spec.snapshot });
    const onAbort = () => r.child.kill("SIGTERM");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const exit = await r.exited;
    opts.signal?.removeEventListener("abort", onAbort);
    return exit;
  } finally {
    const errors = await stack.unwind();
    if (errors[0]) opts.log?.(errors[0].message);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// `vmdib test`: boot headless, watch the console, check, optionally log in over SSH.
// ---------------------------------------------------------------------------------------------------------------

export interface ImageTestOptions extends ImageBootOptions {
  /** Private key file (OpenSSH or PEM, unencrypted) for check 4; with `user`. */
  readonly sshKey?: string;
  /** The private key's text instead of a file (API callers that made a key pair in memory). */
  readonly sshPrivateKey?: string;
  /** Password login instead of a key (an image built with DIB_DEV_USER_PASSWORD). */
  readonly sshPassword?: string;
  /** Login name for check 4 (DIB's devuser element makes `devuser`). */
  readonly user?: string;
  /** The whole test, boot to last check; default 300 s (TCG boots of a full Debian take 30–90 s here). */
  readonly timeoutMs?: number;
  /** Commands to run over SSH; default `findmnt -no SOURCE,LABEL /` and `cat /proc/cmdline`. */
  readonly sshCommands?: readonly string[];
  /** Called once QEMU runs (the CLI says what it waits for). */
  readonly onStart?: (b: BootBanner) => void;
  /** Every console chunk as it arrives (for `--verbose`). */
  readonly onConsole?: (chunk: string) => void;
}

/** One command run over SSH. */
export interface SshCommandResult {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * What `vmdib test` found. `passed` is true only when no check failed (checks that did not apply are "skip":
 * SSH without --ssh-key). `checks` is always the four checks in order.
 */
export interface ImageTestReport {
  readonly image: string;
  readonly format: ImageFormat;
  readonly firmware: "bios" | "uefi";
  readonly accel: Accel;
  readonly accelReason: string;
  readonly passed: boolean;
  readonly checks: readonly CheckResult[];
  /** Seconds from starting QEMU to the login prompt; null when none came. */
  readonly loginPromptSeconds: number | null;
  readonly totalSeconds: number;
  /** As the kernel printed it, or /proc/cmdline over SSH; null when neither was seen. */
  readonly kernelCmdline: string | null;
  readonly ssh: {
    readonly user: string;
    readonly port: number;
    /** The guest's host key, "SHA256:..." as ssh-keygen -l prints it (accepted on first use: the image is new). */
    readonly hostKey: string | null;
    readonly seconds: number | null;
    readonly commands: readonly SshCommandResult[];
  } | null;
  /** How QEMU ended, when it ended before we stopped it (a panic, "No bootable device"). */
  readonly qemuExit: string | null;
  /** What the console shows went wrong (GRUB, initramfs, panic, emergency mode, failed units); empty if nothing. */
  readonly diagnosis: readonly string[];
  /** The last lines of the serial console (on failure: the evidence). */
  readonly serialTail: readonly string[];
  /** A copy of the whole console, kept when a check failed. */
  readonly serialLogCopy: string | null;
}

export const DEFAULT_TEST_TIMEOUT_MS = 300_000;
const DEFAULT_SSH_COMMANDS = ["findmnt -no SOURCE,LABEL /", "cat /proc/cmdline"];
/** Keep at most this much console text in memory (the log file has all of it). */
const CONSOLE_KEEP = 1 << 20;

type Watch = { kind: "login"; prompt: string } | { kind: "exit"; exit: QemuExit } | { kind: "timeout" };

/** Follow QEMU's stdout until a login prompt, QEMU's end, the deadline, or an abort (thrown). */
function watchConsole(
  r: Running,
  deadline: number,
  onText: (all: string) => void,
  onConsole: ((chunk: string) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<Watch> {
  return new Promise<Watch>((res, rej) => {
    let text = "";
    let done = false;
    const stdout = r.child.stdout;
    const finish = (w: Watch | Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stdout?.off("data", onData);
      signal?.removeEventListener("abort", onAbort);
      // Keep draining: a full pipe would stop the guest's console (and the guest with it).
      stdout?.resume();
      if (w instanceof Error) rej(w);
      else res(w);
    };
    const onData = (d: Buffer) => {
      const chunk = d.toString("utf8");
      onConsole?.(chunk);
      text += chunk;
      if (text.length > CONSOLE_KEEP) text = text.slice(0, CONSOLE_KEEP / 2) + text.slice(-CONSOLE_KEEP / 2);
      onText(text);
      // The prompt is printed without a newline after it: look at the text so far each time.
      const prompt = findLoginPrompt(text.slice(-4096));
      if (prompt) finish({ kind: "login", prompt });
    };
    const onAbort = () => finish(signal?.reason instanceof Error ? signal.reason : new VmdibError("interrupted"));
    const timer = setTimeout(() => finish({ kind: "timeout" }), Math.max(0, deadline - performance.now()));
    stdout?.on("data", onData);
    signal?.addEventListener("abort", onAbort, { once: true });
    r.exited.then((exit) => finish({ kind: "exit", exit }));
  });
}

/** SHA256 fingerprint of an SSH public key blob, as OpenSSH prints it. */
export function sshFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

type SshClient = InstanceType<typeof Client>;

/** Read and parse the user's private key, with clear errors for the usual mistakes. */
async function loadPrivateKey(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read the SSH key ${path}`, { cause: err, hint: "--ssh-key takes a PRIVATE key file" });
  }
  const parsed = sshUtils.parseKey(text);
  if (parsed instanceof Error) {
    throw new UsageError(`${path} is not a usable private key: ${parsed.message}`, {
      hint: "give an unencrypted OpenSSH or PEM private key (a test key made with `ssh-keygen -N ''`)",
    });
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key?.isPrivateKey()) {
    throw new UsageError(`${path} holds a public key`, { hint: "--ssh-key takes the PRIVATE key file (without .pub)" });
  }
  return text;
}

/** Connect as `user`, retrying while the guest's sshd is not up yet (QEMU accepts and resets until then). */
async function connectSsh(
  port: number,
  user: string,
  auth: SshAuth,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<{ client: SshClient; hostKey: string | null }> {
  let lastError = "no attempt";
  let authFailures = 0;
  while (performance.now() < deadline) {
    signal?.throwIfAborted();
    const client = new Client();
    let hostKey: string | null = null;
    try {
      await new Promise<void>((res, rej) => {
        client.once("ready", () => res());
        // on, not once: ssh2 can emit a second error (e.g. while the failed connection closes), and an error event
        // without a listener would crash the controller. After the first, rej is a no-op.
        client.on("error", rej);
        client.connect({
          host: "127.0.0.1",
          port,
          username: user,
          ...auth,
          // The image was just built and made its host key on first boot: there is nothing to pin it to. The
          // fingerprint goes into the report instead.
          hostVerifier: (key: Buffer) => {
            hostKey = sshFingerprint(key);
            return true;
          },
          readyTimeout: Math.max(1_000, Math.min(20_000, deadline - performance.now())),
        });
      });
      return { client, hostKey };
    } catch (err) {
      client.end();
      lastError = err instanceof Error ? err.message : String(err);
      // A wrong key or user does not get better by waiting; give a starting sshd a few chances anyway.
      if (/authentication methods failed/i.test(lastError) && ++authFailures >= 3) break;
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }
  throw new Error(lastError);
}

function execCollect(client: SshClient, command: string, timeoutMs: number): Promise<SshCommandResult> {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`\`${command}\` did not finish in ${timeoutMs / 1000} s`)), timeoutMs);
    client.exec(command, (err, ch) => {
      if (err) {
        clearTimeout(timer);
        rej(err);
        return;
      }
      let stdout = "";
      let stderr = "";
      let exitCode: number | null = null;
      ch.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      ch.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      ch.on("exit", (code: number | null) => {
        exitCode = code;
      });
      ch.on("close", () => {
        clearTimeout(timer);
        res({ command, exitCode, stdout, stderr });
      });
      ch.end();
    });
  });
}

/** An SSH failure in words, with what it usually means for a freshly built image. */
export function sshFailureText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (/handshake|ECONNRESET|Connection lost/i.test(msg)) {
    // QEMU's user networking accepts the TCP connection itself; only an SSH server in the guest sends a banner.
    return `${msg} — nothing in the guest answered on port 22: sshd is not running, or the guest's network interface is not configured (no DHCP client: e.g. the dhcp-all-interfaces element)`;
  }
  if (/authentication methods failed/i.test(msg)) {
    return `${msg} — the user or key is not what the image has (devuser: DIB_DEV_USER_USERNAME, DIB_DEV_USER_AUTHORIZED_KEYS)`;
  }
  return msg;
}

/** SSH credentials: a private key's text, or a password. */
export type SshAuth = { readonly privateKey: string } | { readonly password: string };

export interface SshLoginOptions {
  readonly port: number;
  readonly user: string;
  readonly auth: SshAuth;
  readonly commands: readonly string[];
  /** performance.now() by which the login must have happened (retries until then while sshd starts). */
  readonly deadline: number;
  readonly signal?: AbortSignal;
  /** Per command; default 60 s. */
  readonly commandTimeoutMs?: number;
}

/** Log in on 127.0.0.1:port, run each command (collecting its output and exit code), log out. */
export async function sshLoginAndRun(
  o: SshLoginOptions,
): Promise<{ hostKey: string | null; connectMs: number; commands: SshCommandResult[] }> {
  const t0 = performance.now();
  const conn = await connectSsh(o.port, o.user, o.auth, o.deadline, o.signal);
  const connectMs = performance.now() - t0;
  try {
    const commands: SshCommandResult[] = [];
    for (const c of o.commands) commands.push(await execCollect(conn.client, c, o.commandTimeoutMs ?? 60_000));
    return { hostKey: conn.hostKey, connectMs, commands };
  } finally {
    conn.client.end();
  }
}

/** Boot `opts.image` headless (always -snapshot), run the checks, stop QEMU, remove the run directory. */
export async function testImage(opts: ImageTestOptions): Promise<ImageTestReport> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  const keyGiven = opts.sshKey !== undefined || opts.sshPrivateKey !== undefined || opts.sshPassword !== undefined;
  if (keyGiven !== (opts.user !== undefined)) {
    throw new UsageError("--ssh-key and --user go together", {
      hint: "give both (the key's user in the image, e.g. `--user devuser` for DIB's devuser element), or neither",
    });
  }
  const privateKey = opts.sshPrivateKey ?? (opts.sshKey !== undefined ? await loadPrivateKey(opts.sshKey) : undefined);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TEST_TIMEOUT_MS;
  const stack = new CleanupStack();
  try {
    const r = await startImage(stack, { ...opts, snapshot: true }, "controller", "pipe");
    opts.onStart?.({ format: r.spec.format, accel: r.accel, sshPort: r.spec.sshPort, snapshot: true });
    const deadline = r.startedAt + timeoutMs;
    let consoleSoFar = "";
    const watched = await watchConsole(
      r,
      deadline,
      (all) => {
        consoleSoFar = all;
      },
      opts.onConsole,
      opts.signal,
    );
    const loginAt = performance.now();
    const seconds = (ms: number) => Math.round(ms / 100) / 10;
    if (watched.kind === "login") log(`login prompt after ${seconds(loginAt - r.startedAt)} s: ${watched.prompt}`);

    const checks = new Map<CheckId, CheckResult>();
    checks.set(
      "login-prompt",
      watched.kind === "login"
        ? check("login-prompt", "pass", `"${watched.prompt}" after ${seconds(loginAt - r.startedAt)} s`)
        : watched.kind === "exit"
          ? check(
              "login-prompt",
              "fail",
              `${describeExit(watched.exit)} before a login prompt appeared${
                consoleSoFar.trim() === ""
                  ? " and the console stayed empty: the firmware found nothing to boot (no bootloader on the image?)"
                  : ""
              }`,
            )
          : check("login-prompt", "fail", `no login prompt within ${seconds(timeoutMs)} s`),
    );
    let cmdline = kernelCmdlineFromConsole(consoleSoFar);
    let cmdlineSource = "printed by the kernel";

    let ssh: ImageTestReport["ssh"] = null;
    let mounted: { source: string; label: string } | undefined;
    const auth = privateKey
      ? { privateKey }
      : opts.sshPassword !== undefined
        ? { password: opts.sshPassword }
        : undefined;
    if (auth && opts.user) {
      const commands: SshCommandResult[] = [];
      let hostKey: string | null = null;
      let sshSeconds: number | null = null;
      if (watched.kind !== "login") {
        checks.set("ssh", check("ssh", "fail", "not tried: the image did not reach a login prompt"));
      } else {
        try {
          const session = await sshLoginAndRun({
            port: r.spec.sshPort,
            user: opts.user,
            auth,
            commands: opts.sshCommands ?? DEFAULT_SSH_COMMANDS,
            deadline,
            ...(opts.signal ? { signal: opts.signal } : {}),
          });
          hostKey = session.hostKey;
          sshSeconds = seconds(session.connectMs);
          commands.push(...session.commands);
          const failedCmd = commands.find((c) => c.exitCode !== 0);
          checks.set(
            "ssh",
            failedCmd
              ? check(
                  "ssh",
                  "fail",
                  `\`${failedCmd.command}\` exited ${failedCmd.exitCode}: ${failedCmd.stderr.trim()}`,
                )
              : check(
                  "ssh",
                  "pass",
                  `${opts.user}@127.0.0.1:${r.spec.sshPort} after ${sshSeconds} s; ${commands
                    .map((c) => `\`${c.command}\` → ${c.stdout.trim().replace(/\s+/g, " ")}`)
                    .join("; ")}`,
                ),
          );
          const proc = commands.find((c) => c.command.includes("/proc/cmdline") && c.exitCode === 0);
          if (proc?.stdout.trim()) {
            cmdline = proc.stdout.trim();
            cmdlineSource = "/proc/cmdline over SSH";
          }
          const fm = commands.find((c) => c.command.startsWith("findmnt") && c.exitCode === 0);
          const [source = "", label = ""] = fm?.stdout.trim().split(/\s+/) ?? [];
          if (source) mounted = { source, label };
        } catch (err) {
          if (opts.signal?.aborted) throw err;
          checks.set("ssh", check("ssh", "fail", `${opts.user}@127.0.0.1:${r.spec.sshPort}: ${sshFailureText(err)}`));
        }
      }
      ssh = { user: opts.user, port: r.spec.sshPort, hostKey, seconds: sshSeconds, commands };
    } else {
      checks.set("ssh", check("ssh", "skip", "no --ssh-key/--user given"));
    }
    checks.set("console-args", checkConsoleArgs(cmdline, cmdlineSource));
    checks.set("root-by-label", checkRootByLabel(cmdline, cmdlineSource, mounted));

    const ordered = (["login-prompt", "console-args", "root-by-label", "ssh"] as const).map(
      (id) => checks.get(id) as CheckResult,
    );
    const passed = ordered.every((c) => c.status !== "fail");
    const exitNow = await within(r.exited, 0);
    const serialLogCopy = passed ? undefined : await preserveSerialLog(r.spec.serialLog, env);
    return {
      image: r.spec.image,
      format: r.spec.format,
      firmware: r.spec.uefi ? "uefi" : "bios",
      accel: r.accel.accel,
      accelReason: r.accel.reason,
      passed,
      checks: ordered,
      loginPromptSeconds: watched.kind === "login" ? seconds(loginAt - r.startedAt) : null,
      totalSeconds: seconds(performance.now() - r.startedAt),
      kernelCmdline: cmdline ?? null,
      ssh,
      qemuExit: exitNow
        ? `${describeExit(exitNow)}${exitNow.stderr.trim() ? `: ${exitNow.stderr.trim().split("\n").slice(-3).join(" | ")}` : ""}`
        : null,
      diagnosis: diagnoseConsole(consoleSoFar),
      serialTail: await tailFile(r.spec.serialLog, passed ? 10 : 40),
      serialLogCopy: serialLogCopy ?? null,
    };
  } finally {
    const errors = await stack.unwind();
    for (const e of errors) log(e.message);
  }
}
