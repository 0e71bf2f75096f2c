// Host tools for the guest: the build's initramfs compression (`zstd`) run by the host's own zstd while a step waits
// for it in the helper VM. Pure request parsing and argv (parseToolRequest, zstdHostArgv) and the effectful server
// (serveHostTools) that answers requests in a directory of the work dir shared with the guest.
//
// Why: mkinitramfs compresses its ~130 MB cpio with `zstd -q -9 -T0` (Debian's initramfs.conf COMPRESS=zstd).
// Under TCG that took 39 s in the helper VM (loaded host) against 3-5 s natively, and the output is byte-identical:
// zstd's output depends on its version, level and options only, not on the machine or the number of threads (checked:
// -T1/-T2/-T4/-T8 and the guest's own run give the same bytes). A request from a different zstd version is refused
// and the guest compresses it itself, so the image's initramfs is the same bytes either way.
//
// Protocol (files in DIR, the work dir's HOST_TOOLS_DIR, seen by the chroot as GUEST_HOST_TOOLS_DIR):
//   ID.in    the data, written by the guest first
//   ID.req   "version LINE" (the guest zstd's `--version`) then "arg WORD" per option, renamed into place last
//   ID.work  the host renames ID.req to it when it takes the request (a guest that sees ID.req vanish knows)
//   ID.out + ID.done   the host's answer: compressed data, then the marker
//   ID.fail  the host refuses or failed: one line why; the guest then runs its own zstd
// The guest removes every ID.* file once it has its answer.
import { readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";

/** The work dir's subdirectory the host serves; run-phase binds it into the chroot when it exists. */
export const HOST_TOOLS_DIR = "host-tools";
/** Where chroot scripts find it (must match guest/dib/lib/img-functions and elements/dpkg/post-install.d). */
export const GUEST_HOST_TOOLS_DIR = "/tmp/vmdib-host-tools";

const ID_RE = /^zstd-[0-9]{1,10}$/;
/** zstd options a request may carry: quiet, level, threads, stdout. Anything else is refused (nothing else is run). */
const ZSTD_OPTION_RE = /^-(q|c|[1-9]|1[0-9]|T[0-9]{1,3})$/;

export interface ToolRequest {
  /** The guest zstd's `zstd --version` line. */
  readonly version: string;
  readonly args: readonly string[];
}

/** Parses an ID.req text (pure). */
export function parseToolRequest(text: string): ToolRequest {
  let version = "";
  const args: string[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("version ")) version = line.slice("version ".length).trim();
    else if (line.startsWith("arg ")) args.push(line.slice("arg ".length));
  }
  return { version, args };
}

/**
 * The host zstd argv for a request (pure): its options followed by `-c INPUT`, or why it is refused. Only the
 * options of ZSTD_OPTION_RE pass, `-c` must be among them (the answer is stdout), and the versions must be equal
 * (the guarantee of identical bytes).
 */
export function zstdHostArgv(
  req: ToolRequest,
  hostVersion: string,
  input: string,
): { argv: string[] } | { refused: string } {
  if (!req.version || req.version !== hostVersion.trim()) {
    return { refused: `guest ${req.version || "zstd of unknown version"} is not the host's ${hostVersion.trim()}` };
  }
  const bad = req.args.find((a) => !ZSTD_OPTION_RE.test(a));
  if (bad !== undefined) return { refused: `option '${bad}' is not served on the host` };
  if (!req.args.includes("-c")) return { refused: "only compression to stdout (-c) is served on the host" };
  return { argv: [...req.args.filter((a) => a !== "-c"), "-c", "--", input] };
}

/** What the server reports: one line per answered request. */
export type HostToolsReport = (message: string) => void;

export interface HostToolsDeps {
  /** The host's zstd binary. */
  readonly zstd: string;
  /** Runs zstd with argv, stdout into `output`; default: execa. */
  readonly run?: (file: string, argv: readonly string[], output: string) => Promise<void>;
  readonly report: HostToolsReport;
  readonly intervalMs?: number;
}

const runToFile = async (file: string, argv: readonly string[], output: string) => {
  await execa(file, argv, { stdin: "ignore", stdout: { file: output } });
};

/** The host zstd's `--version` line, or undefined when there is none that runs. */
export async function hostZstdVersion(zstd: string): Promise<string | undefined> {
  try {
    return (await execa(zstd, ["--version"], { stdin: "ignore" })).stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Serves requests in `dir` (which must exist) until stop(): polls it, answers one request at a time. A failure to
 * answer becomes ID.fail (the guest then compresses itself), never an error of the build.
 */
export function serveHostTools(dir: string, hostVersion: string, deps: HostToolsDeps): { stop(): Promise<void> } {
  const run = deps.run ?? runToFile;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let busy: Promise<void> = Promise.resolve();

  const answer = async (id: string) => {
    const base = join(dir, id);
    try {
      await rename(`${base}.req`, `${base}.work`);
    } catch {
      return; // the guest gave up on it and removed it
    }
    try {
      const req = parseToolRequest(await readFile(`${base}.work`, "utf8"));
      const plan = zstdHostArgv(req, hostVersion, `${base}.in`);
      if ("refused" in plan) {
        await writeFile(`${base}.fail`, `${plan.refused}\n`);
        deps.report(`zstd not run on the host: ${plan.refused}`);
        return;
      }
      const started = performance.now();
      await run(deps.zstd, plan.argv, `${base}.out`);
      await writeFile(`${base}.done`, "");
      deps.report(
        `zstd ${plan.argv.slice(0, -3).join(" ")} run on the host for the guest (${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
    } catch (err) {
      await rm(`${base}.out`, { force: true }).catch(() => undefined);
      await writeFile(`${base}.fail`, `host zstd failed: ${(err as Error).message.split("\n")[0]}\n`).catch(
        () => undefined,
      );
      deps.report(`zstd failed on the host, the guest compresses itself: ${(err as Error).message.split("\n")[0]}`);
    }
  };

  const poll = async () => {
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch {
      names = [];
    }
    for (const name of names) {
      const id = name.endsWith(".req") ? name.slice(0, -".req".length) : undefined;
      if (id !== undefined && ID_RE.test(id)) await answer(id);
    }
  };

  const tick = () => {
    busy = poll().finally(() => {
      if (!stopped) timer = setTimeout(tick, deps.intervalMs ?? 200);
    });
  };
  tick();

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await busy;
    },
  };
}
