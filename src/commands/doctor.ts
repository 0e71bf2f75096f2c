// `vmdib doctor`: can a build run here, and if not, what to do. Facts are gathered (QEMU, accelerator, 9p, free space,
// mirror, appliance cache), judged by a pure function, and printed one line per check with the command that fixes it.
import { statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { UsageError, VmdibError } from "../errors.js";
import { redactUrl, resolveMirror } from "../mirror.js";
import { cacheDir } from "../paths.js";
import { mirrorRequest } from "../vm/appliance/archive.js";
import { listAppliances } from "../vm/appliance/index.js";
import { chooseAccel, findQemu } from "../vm/probe.js";
import type { Command, CommandContext } from "./context.js";
import { type FlagSpec, optionsHelp, walkFlags } from "./vm-flags.js";

export const DOCTOR_FLAGS: FlagSpec<{ json: boolean; help: boolean }>[] = [
  {
    names: ["--json"],
    help: "one JSON document instead of the table",
    apply: (o) => {
      o.json = true;
    },
  },
  {
    names: ["-h", "--help"],
    help: "this help",
    apply: (o) => {
      o.help = true;
    },
  },
];

const HELP = `usage: vmdib doctor [--json]

Checks what a build needs: QEMU and qemu-img, the accelerator (and why), 9p shares, free space in the cache and
work directories, whether the Debian mirror answers, and the cached appliance. Each problem comes with the command
that fixes it. Exit 0 when a build can run, 1 when something it needs is missing.

${optionsHelp(DOCTOR_FLAGS)}`;

export type Status = "ok" | "warn" | "fail";

export interface Check {
  readonly name: string;
  readonly status: Status;
  readonly detail: string;
  readonly fix?: string;
}

/** What `doctor` looked at; each field is the fact or why it could not be found. */
export interface Facts {
  readonly platform: NodeJS.Platform;
  readonly node: string;
  readonly qemu: { binary: string; version: string } | { error: string; hint?: string };
  readonly qemuImg: { version: string } | { error: string };
  readonly ninep: boolean | undefined;
  readonly accel: { accel: string; reason: string } | { error: string } | undefined;
  readonly space: readonly { what: string; path: string; freeBytes: number | undefined }[];
  readonly mirror: { url: string; release: string; status: number | string } | { error: string; hint?: string };
  readonly appliance: { key: string; createdAt: string; bytes: number; packages: number } | undefined;
}

const GiB = 1024 ** 3;
const install = (platform: NodeJS.Platform, debian: string, brew: string) =>
  platform === "darwin" ? `brew install ${brew}` : `sudo apt-get install ${debian}`;

/** The verdicts (pure). */
export function diagnose(f: Facts): Check[] {
  const checks: Check[] = [];
  const add = (name: string, status: Status, detail: string, fix?: string) =>
    checks.push(fix ? { name, status, detail, fix } : { name, status, detail });

  const major = Number(/^v?(\d+)/.exec(f.node)?.[1]);
  add("node", major >= 20 ? "ok" : "fail", `Node ${f.node}`, major >= 20 ? undefined : "install Node 20 or later");

  if ("binary" in f.qemu) add("qemu", "ok", `${f.qemu.version} (${f.qemu.binary})`);
  else add("qemu", "fail", f.qemu.error, install(f.platform, "qemu-system-x86", "qemu"));
  if ("version" in f.qemuImg) add("qemu-img", "ok", f.qemuImg.version);
  else add("qemu-img", "fail", f.qemuImg.error, install(f.platform, "qemu-utils", "qemu"));

  if (f.ninep === true) add("9p", "ok", "QEMU has virtio-9p (host directories shared with the helper VM)");
  else if (f.ninep === false)
    add("9p", "fail", "this QEMU has no virtio-9p device", install(f.platform, "qemu-system-x86", "qemu"));

  if (!f.accel) add("accelerator", "warn", "not probed yet: it needs the appliance's kernel", "vmdib appliance build");
  else if ("error" in f.accel) add("accelerator", "warn", f.accel.error);
  else {
    const slow = f.accel.accel === "tcg";
    const fix = slow && /not accessible/.test(f.accel.reason) ? "sudo usermod -aG kvm $USER (then log in again)" : "";
    add("accelerator", slow ? "warn" : "ok", `${f.accel.accel}: ${f.accel.reason}`, fix || undefined);
  }

  for (const s of f.space) {
    if (s.freeBytes === undefined) add(`space: ${s.what}`, "warn", `${s.path}: cannot be read`);
    else {
      const free = `${(s.freeBytes / GiB).toFixed(1)} GiB free in ${s.path}`;
      const status: Status = s.freeBytes < GiB ? "fail" : s.freeBytes < 5 * GiB ? "warn" : "ok";
      const fix =
        s.what === "cache"
          ? "free space there, or set VMDIB_CACHE_DIR to a bigger disk"
          : "free space there, or set TMPDIR to a bigger disk";
      add(
        `space: ${s.what}`,
        status,
        status === "ok" ? free : `${free} (a Debian build needs about 5 GiB)`,
        status === "ok" ? undefined : fix,
      );
    }
  }

  if (f.appliance) {
    const a = f.appliance;
    add(
      "appliance",
      "ok",
      `${a.key} cached ${a.createdAt.slice(0, 10)}, ${a.packages} packages, ${(a.bytes / 1e6).toFixed(0)} MB`,
    );
  } else
    add("appliance", "warn", "none cached: the first build assembles it (about a minute)", "vmdib appliance build");

  // Without a mirror a build still runs offline from the caches, if they hold what it needs.
  const offlineOk = f.appliance !== undefined;
  if ("error" in f.mirror) add("mirror", offlineOk ? "warn" : "fail", f.mirror.error, f.mirror.hint);
  else {
    const answered = f.mirror.status === 200;
    const where = `${f.mirror.url} (dists/${f.mirror.release}/InRelease)`;
    add(
      "mirror",
      answered ? "ok" : offlineOk ? "warn" : "fail",
      answered ? `${where} answers` : `${where}: ${f.mirror.status}`,
      answered ? undefined : "set DIB_DISTRIBUTION_MIRROR to a Debian mirror that answers (or build with --offline)",
    );
  }
  return checks;
}

export function renderChecks(checks: readonly Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines = checks.map((c) => {
    const fix = c.fix ? `\n  ${" ".repeat(6 + width)}fix: ${c.fix}` : "";
    return `  ${c.status.padEnd(5)} ${c.name.padEnd(width)}  ${c.detail}${fix}`;
  });
  const failed = checks.filter((c) => c.status === "fail").length;
  const verdict = failed ? `${failed} problem(s) stop a build; fix them and run vmdib doctor again` : "a build can run";
  return `${lines.join("\n")}\n${verdict}\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// Gathering facts (effects).
// ---------------------------------------------------------------------------------------------------------------

/** stdout of a program, or undefined when it cannot be run or fails. */
async function output(cmd: string, args: readonly string[]): Promise<string | undefined> {
  const r = await execa(cmd, args, { reject: false, stdin: "ignore" });
  return r.exitCode === 0 ? r.stdout : undefined;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
const hint = (err: unknown) => (err instanceof VmdibError && err.hint ? { hint: err.hint } : {});

async function gatherFacts(env: NodeJS.ProcessEnv): Promise<Facts> {
  const qemu = await findQemu(env).catch((err: unknown) => ({ error: message(err), ...hint(err) }));
  const img = await output("qemu-img", ["--version"]);
  const devices = "binary" in qemu ? await output(qemu.binary, ["-device", "help"]) : undefined;
  const appliances = (await listAppliances(env)).filter((a) => a.manifest);
  const newest = appliances[0];
  let accel: Facts["accel"];
  if ("binary" in qemu && newest?.manifest) {
    const kernel = join(newest.dir, newest.manifest.vmlinux?.file ?? newest.manifest.kernel.file);
    accel = await chooseAccel({ qemu, kernel, env }).catch((err: unknown) => ({ error: message(err) }));
  }
  const space = await Promise.all(
    [
      { what: "cache", path: cacheDir(env) },
      { what: "work", path: env.TMPDIR || tmpdir() },
    ].map(async (s) => {
      const fs = await statfs(s.path).catch(() => statfs(join(s.path, "..")).catch(() => undefined));
      return { ...s, freeBytes: fs ? fs.bavail * fs.bsize : undefined };
    }),
  );
  return {
    platform: process.platform,
    node: process.version,
    qemu,
    qemuImg: img ? { version: img.split("\n")[0]?.trim() ?? "" } : { error: "qemu-img not found on PATH" },
    ninep: devices === undefined ? undefined : /virtio-9p/.test(devices),
    accel,
    space,
    mirror: await mirrorFacts(env),
    appliance: newest?.manifest && {
      key: newest.key,
      createdAt: newest.manifest.createdAt,
      bytes: newest.manifest.initrd.size + newest.manifest.kernel.size,
      packages: newest.manifest.packages.length,
    },
  };
}

async function mirrorFacts(env: NodeJS.ProcessEnv): Promise<Facts["mirror"]> {
  let url: string;
  try {
    url = resolveMirror(env);
  } catch (err) {
    return { error: message(err), ...hint(err) };
  }
  const release = env.DIB_RELEASE || "bookworm";
  try {
    // Credentials in the mirror URL become a Basic header, as for the downloads themselves.
    const request = mirrorRequest(`${url}/dists/${release}/InRelease`);
    const res = await fetch(request.url, {
      headers: request.headers,
      method: "HEAD",
      signal: AbortSignal.timeout(15_000),
    });
    return { url: redactUrl(url), release, status: res.status === 200 ? 200 : `HTTP ${res.status} ${res.statusText}` };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return { url: redactUrl(url), release, status: `no answer (${cause ?? message(err)})` };
  }
}

export const run: Command = async (ctx: CommandContext) => {
  const values = { json: false, help: false };
  const extra = walkFlags(ctx.args, { command: "doctor", specs: DOCTOR_FLAGS, into: values, word: () => "stop" });
  if (extra.length) throw new UsageError(`unexpected argument '${extra[0]}'`, { hint: "vmdib doctor [--json]" });
  if (values.help) {
    ctx.stdout.write(HELP);
    return 0;
  }
  const checks = diagnose(await gatherFacts(ctx.env));
  ctx.stdout.write(values.json ? `${JSON.stringify(checks, null, 2)}\n` : renderChecks(checks));
  return checks.some((c) => c.status === "fail") ? 1 : 0;
};
